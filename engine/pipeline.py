"""The public API a backtest is written in: tables, derived columns, operators.

A :class:`Pipeline` is a declaration, not a computation. Executors run it::

    p = Pipeline("example")
    links = p.count("friend_links", on="friendship", key=Unordered("user_a", "user_b"))
    is_friend = p.lookup("is_friend", on="message", table=links,
                         key=Unordered("sender", "recipient"))
    seen = p.table("seen", default=0)
    p.update("seen_by_sender", on="message", table=seen, key="sender",
             merge=lambda old, e, view: old + 1)
    p.emit("out", on="message", output="scores", inputs=[is_friend], reads=[seen],
           fn=lambda e, view: [Record(e.sender, {"n": view.get(seen, e.sender)})])

Operators subscribe to event *kinds* (the source's event types). Each one writes one thing —
a table, or a derived column of its events — and declares everything it reads: tables (for
``view.get``) and columns (``inputs``). The planner orders them into phases from those
declarations; reading anything undeclared raises :class:`~engine.errors.UndeclaredReadError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

import numpy as np

from engine.errors import PipelineError
from engine.keys import KeySpec, validate_key
from engine.state.aggregates import AggregateKind, AggregateSpec
from engine.windows import Window

__all__ = [
    "BatchFn",
    "Builtin",
    "ColumnRef",
    "Derive",
    "Emit",
    "Lookup",
    "Operator",
    "Output",
    "Pipeline",
    "Record",
    "TableRef",
    "Update",
]

Dtype: TypeAlias = Literal["int64", "float64", "bool", "object"]
ColumnLike: TypeAlias = "str | ColumnRef"
#: A vectorised operator body: columns by name (fields, ``seq``, ``ts`` and inputs) -> result.
BatchFn: TypeAlias = Callable[[Mapping[str, np.ndarray]], Any]


@dataclass(frozen=True, slots=True)
class Record:
    """One output record: its Kafka key and its value (a mapping of field to value)."""

    key: Hashable
    value: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TableRef:
    """A keyed table. ``builtin`` is set for the vectorised built-in tables."""

    name: str
    default: Any = None
    builtin: AggregateSpec | None = None


@dataclass(frozen=True, slots=True)
class ColumnRef:
    """A column derived for the events of one kind (by a lookup or a derive operator)."""

    name: str
    kind: str
    dtype: Dtype


@dataclass(frozen=True, slots=True)
class Output:
    """A named output stream: the connector maps it to a topic and a value schema."""

    name: str
    key: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    """Writes ``table[key] = merge(old, event, view)`` for each subscribed event."""

    name: str
    kinds: tuple[str, ...]
    table: TableRef
    key: KeySpec
    merge: Callable[[Any, Any, Any], Any]
    reads: tuple[TableRef, ...]
    inputs: tuple[ColumnRef, ...]


@dataclass(frozen=True, slots=True)
class Builtin:
    """Feeds a built-in table: one write of ``value`` (if ``where``) per subscribed event."""

    name: str
    kinds: tuple[str, ...]
    table: TableRef
    key: KeySpec
    value: str | ColumnRef | None
    where: str | ColumnRef | None
    inputs: tuple[ColumnRef, ...]
    reads: tuple[TableRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """Derives a column: the value of ``table`` at ``key`` as of each event."""

    name: str
    kinds: tuple[str, ...]
    column: ColumnRef
    table: TableRef
    key: KeySpec
    before: bool
    default: Any
    inputs: tuple[ColumnRef, ...]
    reads: tuple[TableRef, ...]


@dataclass(frozen=True, slots=True)
class Derive:
    """Derives a column from each event with ``fn(event, view)`` (or ``batch_fn(columns)``)."""

    name: str
    kinds: tuple[str, ...]
    column: ColumnRef
    fn: Callable[[Any, Any], Any]
    batch_fn: BatchFn | None
    inputs: tuple[ColumnRef, ...]
    reads: tuple[TableRef, ...]


@dataclass(frozen=True, slots=True)
class Emit:
    """Emits zero or more records per event to ``output``.

    ``fn(event, view)`` returns an iterable of :class:`Record`. ``batch_fn(columns)``, when
    given, returns the same records for a whole batch as a mapping of output field to array
    (one record per event, in event order), and must agree with ``fn`` bit for bit; executors
    that batch use it, the serial executor never does.
    """

    name: str
    kinds: tuple[str, ...]
    output: Output
    fn: Callable[[Any, Any], Iterable[Record]]
    batch_fn: BatchFn | None
    inputs: tuple[ColumnRef, ...]
    reads: tuple[TableRef, ...]


Operator: TypeAlias = Update | Builtin | Lookup | Derive | Emit


def _kinds(on: str | Sequence[str], where: str) -> tuple[str, ...]:
    kinds = (on,) if isinstance(on, str) else tuple(on)
    if not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise PipelineError(f"{where}: `on` must name one or more event kinds, got {on!r}")
    return kinds


class _CountShortcut(Protocol):
    def __call__(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
    ) -> TableRef: ...


class _SumShortcut(Protocol):
    def __call__(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        value: str | ColumnRef,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
        dtype: Literal["int64", "float64"] = "int64",
    ) -> TableRef: ...


class _ValueShortcut(Protocol):
    def __call__(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        value: str | ColumnRef,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
        dtype: Literal["int64", "float64"] = "int64",
        default: Any = None,
    ) -> TableRef: ...


class _PairShortcut(Protocol):
    def __call__(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        value: str | ColumnRef,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
    ) -> TableRef: ...


class _SinceShortcut(Protocol):
    def __call__(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
        default: Any = None,
    ) -> TableRef: ...


def _fixed_default(kind: AggregateKind, dtype: str | None) -> Any:
    """The value of a key without events, for the kinds whose shortcut takes no ``default``."""
    if kind == "ratio":
        return (0, 0)
    return 0.0 if dtype == "float64" else 0


def _shortcut(kind: AggregateKind, shape: type, doc: str) -> Any:
    """``Pipeline.<kind>``: :meth:`Pipeline.builtin` of ``kind`` with the arguments that
    ``shape``'s ``__call__`` takes (checked as a call with that signature would be); kinds
    without a ``default`` argument get :func:`_fixed_default`."""
    signature = inspect.signature(shape.__call__)

    def shortcut(self: Pipeline, *args: Any, **kwargs: Any) -> TableRef:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        name = arguments.pop("name")
        if "default" not in arguments:
            arguments["default"] = _fixed_default(kind, arguments.get("dtype"))
        return self.builtin(name, kind, **arguments)

    shortcut.__name__ = kind
    shortcut.__qualname__ = f"Pipeline.{kind}"
    shortcut.__doc__ = doc
    shortcut.__signature__ = signature  # type: ignore[attr-defined]
    return shortcut


@dataclass
class Pipeline:
    """A backtest: tables, derived columns and operators, declared in order."""

    name: str
    description: str = ""
    operators: list[Operator] = field(default_factory=list)
    tables: dict[str, TableRef] = field(default_factory=dict)
    columns: dict[tuple[str, str], ColumnRef] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The event kinds its operators subscribe to, sorted: each needs an input."""
        return tuple(sorted({kind for op in self.operators for kind in op.kinds}))

    # -- declarations -------------------------------------------------------------------

    def _new_operator_name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise PipelineError(f"operator names must be non-empty strings, got {name!r}")
        if any(op.name == name for op in self.operators):
            raise PipelineError(f"operator {name!r} is declared twice; names must be unique")
        return name

    def _new_table(self, ref: TableRef) -> TableRef:
        if ref.name in self.tables:
            raise PipelineError(f"table {ref.name!r} is declared twice; names must be unique")
        self.tables[ref.name] = ref
        return ref

    def _new_column(self, name: str, kinds: tuple[str, ...], dtype: Dtype) -> ColumnRef:
        if len(kinds) != 1:
            raise PipelineError(f"{name}: a derived column belongs to exactly one event kind")
        if name in {"seq", "ts", "kind", "topic", "partition", "offset"}:
            raise PipelineError(f"{name}: that name is reserved for event metadata")
        if (kinds[0], name) in self.columns:
            raise PipelineError(f"column {name!r} of {kinds[0]!r} is declared twice")
        ref = ColumnRef(name, kinds[0], dtype)
        self.columns[(kinds[0], name)] = ref
        return ref

    def _check_tables(self, where: str, tables: Iterable[TableRef]) -> tuple[TableRef, ...]:
        out = tuple(tables)
        for t in out:
            if not isinstance(t, TableRef) or self.tables.get(t.name) is not t:
                raise PipelineError(f"{where}: {t!r} is not a table of this pipeline")
        return out

    def _check_inputs(
        self, where: str, kinds: tuple[str, ...], inputs: Iterable[ColumnRef]
    ) -> tuple[ColumnRef, ...]:
        out = tuple(inputs)
        for c in out:
            if not isinstance(c, ColumnRef) or self.columns.get((c.kind, c.name)) is not c:
                raise PipelineError(f"{where}: {c!r} is not a column of this pipeline")
            if kinds != (c.kind,):
                raise PipelineError(
                    f"{where}: column {c.name!r} belongs to {c.kind!r} events, but the "
                    f"operator runs on {kinds}"
                )
        return out

    def _column_inputs(self, *cols: str | ColumnRef | None) -> tuple[ColumnRef, ...]:
        return tuple(c for c in cols if isinstance(c, ColumnRef))

    def table(self, name: str, *, default: Any = None) -> TableRef:
        """Declare a table written by Python merges (:meth:`update`)."""
        return self._new_table(TableRef(name, default))

    def update(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        table: TableRef,
        key: KeySpec,
        merge: Callable[[Any, Any, Any], Any],
        reads: Iterable[TableRef] = (),
        inputs: Iterable[ColumnRef] = (),
    ) -> Update:
        """Write ``table[key(event)] = merge(old, event, view)`` for each event of ``on``.

        ``view.get(t, k)`` reads a declared table as of this event; ``view.schedule(at, fn)``
        applies ``fn(old)`` to the same key before the first later event with ``ts >= at``.
        """
        name = self._new_operator_name(name)
        kinds = _kinds(on, name)
        if table.builtin is not None:
            raise PipelineError(f"{name}: table {table.name!r} is built in; it has its own writer")
        if not callable(merge):
            raise PipelineError(f"{name}: merge must be callable (old, event, view) -> new")
        op = Update(
            name,
            kinds,
            self._check_tables(name, [table])[0],
            validate_key(key, name),
            merge,
            self._check_tables(name, reads),
            self._check_inputs(name, kinds, inputs),
        )
        self.operators.append(op)
        return op

    def builtin(
        self,
        name: str,
        kind: AggregateKind,
        *,
        on: str | Sequence[str],
        key: KeySpec,
        value: str | ColumnRef | None = None,
        where: str | ColumnRef | None = None,
        window: Window | None = None,
        dtype: Literal["int64", "float64", "bool"] = "int64",
        default: Any = None,
    ) -> TableRef:
        """Declare a built-in table fed by the events of ``on`` (see the shortcuts below)."""
        opname = self._new_operator_name(name)
        kinds = _kinds(on, opname)
        needs_value = kind not in ("count", "since_last")
        if needs_value and value is None:
            raise PipelineError(f"{name}: a {kind} table needs `value`")
        if not needs_value and value is not None:
            raise PipelineError(f"{name}: a {kind} table takes no `value`")
        if kind == "ratio":
            dtype = "bool"
        key = _builtin_key(validate_key(key, name), name)
        if callable(key):
            raise PipelineError(f"{name}: built-in tables need field-name keys to vectorise")
        spec = AggregateSpec(kind=kind, window=window, dtype=dtype)
        ref = self._new_table(TableRef(name, default, spec))
        inputs = self._check_inputs(name, kinds, self._column_inputs(value, where))
        self.operators.append(Builtin(opname, kinds, ref, key, value, where, inputs))
        return ref

    # The shortcuts: one built-in kind each, typed by their shape (see _shortcut below).
    count: ClassVar[_CountShortcut] = _shortcut(
        "count",
        _CountShortcut,
        "Number of events per key (that satisfy ``where``), optionally windowed.",
    )
    sum: ClassVar[_SumShortcut] = _shortcut("sum", _SumShortcut, "Sum of ``value`` per key.")
    min: ClassVar[_ValueShortcut] = _shortcut(
        "min", _ValueShortcut, "Smallest ``value`` per key; ``default`` when the key has none."
    )
    max: ClassVar[_ValueShortcut] = _shortcut(
        "max", _ValueShortcut, "Greatest ``value`` per key; ``default`` when the key has none."
    )
    first: ClassVar[_ValueShortcut] = _shortcut(
        "first", _ValueShortcut, "The earliest ``value`` per key in log order."
    )
    last: ClassVar[_ValueShortcut] = _shortcut(
        "last", _ValueShortcut, "The latest ``value`` per key in log order."
    )
    ratio: ClassVar[_PairShortcut] = _shortcut(
        "ratio",
        _PairShortcut,
        "The pair ``(hits, total)`` per key: events whose boolean ``value`` is true, all.",
    )
    since_last: ClassVar[_SinceShortcut] = _shortcut(
        "since_last",
        _SinceShortcut,
        "Reader's time minus the time of the key's latest event in log order.",
    )
    distinct: ClassVar[_PairShortcut] = _shortcut(
        "distinct", _PairShortcut, "Exact number of distinct integer ``value``s per key."
    )

    def lookup(
        self,
        name: str,
        *,
        on: str,
        table: TableRef,
        key: KeySpec,
        before: bool = False,
        default: Any = None,
        dtype: Dtype | None = None,
        inputs: Iterable[ColumnRef] = (),
    ) -> ColumnRef:
        """Derive column ``name``: ``table[key(event)]`` as of each event of ``on``.

        The value includes this event's own writes from earlier phases unless ``before``.
        ``default`` replaces the table's default for keys without a value.
        """
        opname = self._new_operator_name(name)
        kinds = _kinds(on, opname)
        key = validate_key(key, name)
        (table,) = self._check_tables(name, [table])
        if table.builtin is not None:
            key = _builtin_key(key, name)
        if dtype is None:
            dtype = _lookup_dtype(table)
        column = self._new_column(name, kinds, dtype)
        default = table.default if default is None else default
        op = Lookup(
            opname,
            kinds,
            column,
            table,
            key,
            before,
            default,
            self._check_inputs(name, kinds, inputs),
            (table,),
        )
        self.operators.append(op)
        return column

    def derive(
        self,
        name: str,
        *,
        on: str,
        fn: Callable[[Any, Any], Any],
        batch_fn: BatchFn | None = None,
        dtype: Dtype = "object",
        inputs: Iterable[ColumnRef] = (),
        reads: Iterable[TableRef] = (),
    ) -> ColumnRef:
        """Derive column ``name`` = ``fn(event, view)`` for each event of ``on``.

        ``batch_fn(columns)`` may compute the same values for a whole batch at once (it must
        agree with ``fn`` bit for bit; it is only used when ``reads`` is empty).
        """
        opname = self._new_operator_name(name)
        kinds = _kinds(on, opname)
        if not callable(fn):
            raise PipelineError(f"{name}: fn must be callable (event, view) -> value")
        column = self._new_column(name, kinds, dtype)
        op = Derive(
            opname,
            kinds,
            column,
            fn,
            batch_fn,
            self._check_inputs(name, kinds, inputs),
            self._check_tables(name, reads),
        )
        self.operators.append(op)
        return column

    def output(self, name: str, *, key: str, fields: Sequence[str] = ()) -> Output:
        """Declare an output stream; ``key`` is the value field whose value keys each record."""
        if name in self.outputs:
            raise PipelineError(f"output {name!r} is declared twice")
        out = Output(name, key, tuple(fields))
        self.outputs[name] = out
        return out

    def emit(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        output: Output,
        fn: Callable[[Any, Any], Iterable[Record]],
        batch_fn: BatchFn | None = None,
        inputs: Iterable[ColumnRef] = (),
        reads: Iterable[TableRef] = (),
    ) -> Emit:
        """Emit ``fn(event, view)`` (zero or more :class:`Record`) for each event of ``on``."""
        opname = self._new_operator_name(name)
        kinds = _kinds(on, opname)
        if self.outputs.get(output.name) is not output:
            raise PipelineError(f"{name}: {output!r} is not an output of this pipeline")
        if batch_fn is not None and len(kinds) != 1:
            raise PipelineError(f"{name}: batch_fn needs a single event kind")
        op = Emit(
            opname,
            kinds,
            output,
            fn,
            batch_fn,
            self._check_inputs(name, kinds, inputs),
            self._check_tables(name, reads),
        )
        self.operators.append(op)
        return op


def _lookup_dtype(table: TableRef) -> Dtype:
    spec = table.builtin
    if spec is None:
        return "object"
    if spec.kind in ("count", "distinct", "since_last"):
        return "int64" if table.default is not None or spec.kind != "since_last" else "object"
    if spec.kind == "ratio":
        return "object"
    if table.default is None:
        return "object"
    return spec.dtype if spec.dtype != "bool" else "bool"


def _builtin_key(key: KeySpec, where: str) -> KeySpec:
    """Refuse a one-field tuple on a built-in table: its keys would be 1-tuples in the serial
    executor but the field's values in the vectorised ones (which address both alike), so
    ``view.get(table, (x,))`` would find the key in one executor and miss it in the other."""
    if isinstance(key, tuple) and len(key) == 1:
        raise PipelineError(
            f"{where}: key {key!r} is a tuple of one field; name the field itself "
            f"(key={key[0]!r}), whose values are the table's keys"
        )
    return key
