"""Fencing: at most one live run per job id, decided by a lease in a Kafka topic.

Two runs of one job id (a second Helm release, a manual run beside the Job, a retried pod
whose predecessor still lives) would each write every output record. Before it writes
anything, a run takes the job's lease; a run that cannot fails with exit 2, and a run that
loses its lease stops writing and fails with exit 2 too.

The lease is a log, not a value: the records of a one-partition topic (``JOB_ID.lease``), each
a JSON ``claim``, ``renew`` or ``release`` of one run (a fresh id per process start, with host,
pid and start time). Every reader replays the log with the same rules (:class:`LeaseState`),
so the broker's order of appends decides every race, with no clocks compared across hosts:

- a fresh claim wins iff nobody holds the lease at its offset;
- a takeover claim names the offset of the holder's last record that its writer saw; it wins
  iff that is still the holder's last record (compare-and-set by log order: a renewal that
  got in first defeats it);
- a renewal or release counts only from the holder; a renewal from anyone else tells its
  writer that it was taken over.

A claimant that finds a holder watches the log. Any new record of the holder (a renewal, every
``lease_timeout / 6`` seconds) proves it alive: the claimant fails with exit 2 naming it. After
``lease_timeout`` seconds without one (measured on the claimant's own monotonic clock, from
after the holder's last record was written) it writes a takeover claim. So a SIGKILLed run's
successor starts within ``lease_timeout``; a released lease (every run that ends, well or not,
releases it once nothing of its own can still be delivered) is claimed at once.

The holder must never write once a takeover may have happened. It writes only while its
*gate* is open: until ``t + lease_timeout - delivery - margin``, where ``t`` is when it sent its
last renewal that it read back as valid (a takeover comes no earlier than ``t +
lease_timeout``), ``delivery`` the most time a record handed to its Kafka client may wait for
the broker (the producers' ``delivery.timeout.ms``, which the run bounds by
:func:`delivery_timeout_s`), and ``margin`` a twelfth of the lease for clock rates. So a
record handed on while the gate is open has landed or failed before anyone can take over,
also when the run is cut off from the broker or its coordinator hangs. Checks
(:class:`LeaseGate`, shared memory read by the sink process and the dead-letter producer)
cost a comparison per 1,024 records, and the sink process re-checks when it gets SIGCONT,
before it queues another record; a run that lost its lease drops what its client still
queues and fails with exit 2.

Not covered: a process *frozen* while its Kafka client holds records (the sink process
stopped with SIGSTOP, a frozen pod or VM) sends them when it thaws, before any check of
ours can run (measured: librdkafka does not time them out first). Only the broker can
refuse those, through a transactional producer's epoch (``transactional.id`` fencing);
see the README's "Fencing" for why the output is not written in transactions.

The lease's Kafka clients live in a keeper process (:class:`Lease`), so that the run's own
process never holds librdkafka threads when it forks its workers; the keeper renews only
while the run's process shows signs of life (a heartbeat thread), so a run whose coordinator
is stopped is taken over like a dead one.

Broker features: produce and fetch on a one-partition topic, read from its first offset; no
transactions, no compaction, no broker clocks (so the embedded Tansu broker, which has no
reliable ``read_committed`` and ignores ``LogAppendTime``, behaves exactly like Apache Kafka).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import multiprocessing.sharedctypes
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal, Protocol

from connector.errors import BrokerError, ConnectorError, RefusedError

__all__ = [
    "Lease",
    "LeaseGate",
    "LeaseIO",
    "LeaseRecord",
    "LeaseState",
    "RunIdentity",
    "Timing",
    "acquire",
    "delivery_timeout_s",
    "renew",
]

logger = logging.getLogger(__name__)

Kind = Literal["claim", "renew", "release"]
_FORMAT = 1
#: Gate states in shared memory (floats, so one array holds them with the times).
OPEN, FENCED, BROKEN = 0.0, 1.0, 2.0
_TEXT_BYTES = 4096
_POLL_S = 0.1


def delivery_timeout_s(lease_timeout_s: int, broker_timeout_s: int) -> int:
    """The longest a record may wait in a producer's queue: half the lease, at most
    ``broker_timeout`` (so that what a paused or cut-off run still holds times out before a
    takeover; see the module docstring)."""
    return max(1, min(broker_timeout_s, lease_timeout_s // 2))


@dataclass(frozen=True, slots=True)
class Timing:
    """The lease's periods, all derived from ``lease_timeout`` (seconds)."""

    lease_s: float
    delivery_s: float

    @property
    def renew_s(self) -> float:
        """How often the holder renews."""
        return self.lease_s / 6

    @property
    def margin_s(self) -> float:
        """Slack for clock rates and scheduling."""
        return max(1.0, self.lease_s / 12)

    @property
    def horizon_s(self) -> float:
        """How long after sending a confirmed record the holder may hand records on."""
        return self.lease_s - self.delivery_s - self.margin_s


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """Who a run is, as its lease records say."""

    run: str
    host: str
    pid: int
    started: str  # ISO-8601 UTC
    #: The kernel boot and pid namespace the pid belongs to ('' if unknown).
    machine: str = ""

    @classmethod
    def here(cls) -> RunIdentity:
        """This process, with a fresh run id."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return cls(
            uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), now.isoformat(), _machine()
        )

    def gone(self) -> bool:
        """Whether this run's process is known to be dead: it ran in this very kernel boot
        and pid namespace, and its pid is free or a zombie. (A reused pid reads as alive: the
        safe side.)"""
        if not self.machine or self.machine != _machine():
            return False
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def describe(self) -> str:
        """``since 2026-...Z, started by host/pid (run abc)``."""
        return f"since {self.started}, started by {self.host}/{self.pid} (run {self.run})"


def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return f"{boot.read().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One record of the lease log."""

    kind: Kind
    who: RunIdentity
    #: A takeover claim: the offset of the holder's last record its writer saw.
    expect: int | None = None

    def encode(self) -> bytes:
        """The record's value: compact JSON."""
        return json.dumps(
            {
                "v": _FORMAT,
                "kind": self.kind,
                "run": self.who.run,
                "host": self.who.host,
                "pid": self.who.pid,
                "started": self.who.started,
                "machine": self.who.machine,
                "expect": self.expect,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> LeaseRecord | None:
        """The record in ``value``, or None if it is not one (it is then ignored)."""
        try:
            d = json.loads(value or b"")
            kind = d["kind"]
            if kind not in ("claim", "renew", "release"):
                return None
            expect = d.get("expect")
            who = RunIdentity(
                str(d["run"]),
                str(d["host"]),
                int(d["pid"]),
                str(d["started"]),
                str(d.get("machine", "")),
            )
            return cls(kind, who, None if expect is None else int(expect))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(slots=True)
class Holder:
    """The run that holds the lease and the offset of its last counted record."""

    who: RunIdentity
    last: int


@dataclass(slots=True)
class LeaseState:
    """The lease as the log up to :attr:`position` decides it (see the module docstring).

    A log whose first retained record is not a claim (older ones deleted by retention) starts
    with that record's run as the holder.
    """

    holder: Holder | None = None
    position: int = -1
    _seen: bool = field(default=False, repr=False)

    def apply(self, offset: int, record: LeaseRecord | None) -> None:
        """Take the record at ``offset`` (None: not a lease record) into account."""
        self.position = max(self.position, offset)
        if record is None:
            return
        first, self._seen = not self._seen, True
        h = self.holder
        if record.kind == "claim":
            if (h is None and record.expect is None) or (
                h is not None and record.expect is not None and record.expect == h.last
            ):
                self.holder = Holder(record.who, offset)
            return
        if h is None and first and record.kind == "renew":
            self.holder = Holder(record.who, offset)
        elif h is not None and h.who.run == record.who.run:
            if record.kind == "renew":
                h.last = offset
            else:
                self.holder = None

    def held_by(self, run: str) -> bool:
        """Whether ``run`` holds the lease."""
        return self.holder is not None and self.holder.who.run == run


class LeaseIO(Protocol):
    """The lease log: append a record (its offset once stored), read what follows."""

    def write(self, record: LeaseRecord) -> int:
        """Append ``record`` and return its offset (BrokerError if it cannot)."""
        ...

    def read(self, timeout_s: float) -> list[tuple[int, LeaseRecord | None]]:
        """The next records in offset order; empty after ``timeout_s`` without any."""
        ...


def _read_through(io: LeaseIO, state: LeaseState, offset: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while state.position < offset:
        for off, record in io.read(_POLL_S):
            state.apply(off, record)
        if state.position < offset and time.monotonic() > deadline:
            raise BrokerError(
                f"the lease record at offset {offset} did not come back within {timeout_s:.0f} s"
            )


def _live(job: str, holder: Holder, topic: str, lease_s: float) -> RefusedError:
    return RefusedError(
        f"another run of job {job} is live {holder.who.describe()}; wait for it or stop it "
        f"(it renews its lease in topic {topic}; a run that stops renewing is taken over "
        f"{lease_s:.0f} s later, lease_timeout)"
    )


def acquire(
    io: LeaseIO,
    me: RunIdentity,
    *,
    job: str,
    topic: str,
    lease_s: float,
    io_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    gone: Callable[[RunIdentity], bool] = RunIdentity.gone,
) -> tuple[LeaseState, float]:
    """Take the job's lease; returns the state and the monotonic time the winning claim was
    sent. Raises :class:`RefusedError` if another run is live (see the module docstring).

    ``gone(holder)`` says whether the holder is known to be dead (a run killed on this very
    machine): then the takeover needs no wait."""
    state = LeaseState()
    expect: int | None = None
    while True:
        sent = clock()
        mine = io.write(LeaseRecord("claim", me, expect))
        _read_through(io, state, mine, io_timeout_s)
        if state.held_by(me.run):
            return state, sent
        holder = state.holder
        if holder is None:  # released after our claim: claim afresh
            expect = None
            continue
        if expect is not None:  # our takeover lost to a record written after we looked
            raise _live(job, holder, topic, lease_s)
        watched = (holder.who.run, holder.last)
        since = clock()
        if gone(holder.who):
            logger.warning(
                "job %s: the run %s that held the lease is gone from this machine; taking over",
                job,
                holder.who.describe(),
            )
            expect = holder.last
            continue
        logger.info(
            "job %s: the lease is held by the run %s; taking it over unless that run shows a "
            "sign of life within %.0f s",
            job,
            holder.who.describe(),
            lease_s,
        )
        while clock() - since < lease_s:
            for off, record in io.read(_POLL_S):
                state.apply(off, record)
            now = state.holder
            if now is None:
                break
            if (now.who.run, now.last) != watched:
                raise _live(job, now, topic, lease_s)
        else:
            expect = holder.last
            logger.warning(
                "job %s: the run %s wrote nothing to its lease for %.0f s; taking over",
                job,
                holder.who.describe(),
                lease_s,
            )
            continue
        expect = None


def renew(io: LeaseIO, state: LeaseState, me: RunIdentity, *, io_timeout_s: float) -> Holder | None:
    """Append a renewal and read it back: None if it counts, else the run that took over."""
    mine = io.write(LeaseRecord("renew", me))
    _read_through(io, state, mine, io_timeout_s)
    if state.held_by(me.run):
        return None
    if state.holder is None:  # cannot happen: only we release our lease
        return Holder(me, mine)
    return state.holder


class LeaseGate:
    """Whether the run may hand records to a producer now; see the module docstring.

    Reads ``numbers`` (``[open until (monotonic s), state, heartbeat]``) and ``text`` (the
    reason when closed for good), shared memory written by the lease keeper. Called as
    ``gate()``: returns at once while open, waits while a renewal is due, raises
    :class:`RefusedError` once the lease is lost and :class:`BrokerError` if it cannot be renewed.
    """

    def __init__(
        self,
        numbers: MutableSequence[float],
        text: Any,
        *,
        job: str,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._n = numbers
        self._text = text
        self._job = job
        self._wait_s = wait_s
        self._clock = clock
        self._sleep = sleep

    def __call__(self) -> None:
        if self._n[1] == OPEN and self._clock() < self._n[0]:
            return
        deadline = self._clock() + self._wait_s
        while True:
            state = self._n[1]
            if state == FENCED:
                raise RefusedError(self.reason())
            if state == BROKEN:
                raise BrokerError(self.reason())
            if self._clock() < self._n[0]:
                return
            if self._clock() > deadline:
                raise BrokerError(
                    f"the lease of job {self._job} was not renewed for {self._wait_s:.0f} s; "
                    "this run stopped writing; run the job again"
                )
            self._sleep(0.02)

    def open_for(self) -> float:
        """Seconds from now that records may still be handed on, after waiting for the gate
        as a call does (raising as it does): what a writer on another host, which cannot
        read this gate, is allowed (:mod:`connector.output.ray_sinks`)."""
        self()
        return max(0.0, self._n[0] - self._clock())

    def reason(self) -> str:
        """Why the gate closed for good ('' while it has not)."""
        return bytes(self._text[:]).split(b"\0", 1)[0].decode(errors="replace")

    def close(self, state: float, reason: str) -> None:
        """Close the gate for good (the keeper, once fenced or broken)."""
        data = reason.encode()[: _TEXT_BYTES - 1] + b"\0"
        self._text[: len(data)] = data
        self._n[1] = state

    def open_until(self, until: float) -> None:
        """Let records through until ``until`` (monotonic seconds)."""
        self._n[0] = until

    def beat(self) -> None:
        """The run's process is alive (its heartbeat thread)."""
        self._n[2] = self._clock()

    def heartbeat_age(self) -> float:
        """Seconds since the last :meth:`beat`."""
        return self._clock() - self._n[2]


# ------------------------------------------------------------------- Kafka and the keeper


class KafkaLeaseIO:
    """The lease log in a one-partition Kafka topic, read from its first offset."""

    def __init__(self, client: dict[str, Any], topic: str, job: str, timeout_s: float) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        from connector.kafka.producer import TopicSpec, create_topics

        create_topics(
            client,
            [TopicSpec(topic, 1, {"cleanup.policy": "delete"})],
            exist_ok=True,
            timeout_s=timeout_s,
        )
        self._topic = topic
        self._key = job.encode()
        self._timeout_s = timeout_s
        self._producer = Producer(
            {
                **client,
                # One record in flight at a time, and a repeated record changes nothing
                # (a second claim or renewal is ignored), so no idempotence (its producer id
                # costs half a second at start).
                "acks": "all",
                "enable.idempotence": False,
                "linger.ms": 0,
                "message.timeout.ms": int(timeout_s * 1000),
            }
        )
        self._consumer = Consumer(
            {
                **client,
                "group.id": f"restream-lease-{uuid.uuid4().hex[:8]}",  # assigned, never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "fetch.error.backoff.ms": 20,
                "auto.offset.reset": "earliest",
            }
        )
        # Offset 0, not OFFSET_BEGINNING (whose lookup costs half a second on the embedded
        # broker); where retention removed it, the reset goes to the first one left.
        self._consumer.assign([TopicPartition(topic, 0, 0)])

    def write(self, record: LeaseRecord) -> int:
        """See :class:`LeaseIO`."""
        box: list[tuple[Any, int | None]] = []
        self._producer.produce(
            self._topic,
            record.encode(),
            self._key,
            0,
            on_delivery=lambda err, msg: box.append((err, msg.offset())),
        )
        self._producer.flush(self._timeout_s)
        if not box:
            raise BrokerError(f"no answer writing to the lease topic {self._topic}")
        error, offset = box[0]
        if error is not None or offset is None:
            raise BrokerError(f"cannot write to the lease topic {self._topic}: {error}")
        return offset

    def read(self, timeout_s: float) -> list[tuple[int, LeaseRecord | None]]:
        """See :class:`LeaseIO`."""
        out: list[tuple[int, LeaseRecord | None]] = []
        # poll() returns with the first record; consume() would wait out its timeout.
        first = self._consumer.poll(timeout_s)
        if first is None:
            return out
        for m in [first, *self._consumer.consume(100, timeout=0)]:
            error = m.error()
            if error is not None:
                if error.code() == error._PARTITION_EOF:
                    continue
                raise BrokerError(f"reading the lease topic {self._topic}: {error.str()}")
            out.append((int(m.offset() or 0), LeaseRecord.decode(m.value())))
        return out

    def close(self) -> None:
        """Close both clients."""
        self._producer.flush(self._timeout_s)
        self._consumer.close()


@dataclass(frozen=True, slots=True)
class KeeperSettings:
    """What the keeper process needs."""

    client: dict[str, Any]
    job: str
    topic: str
    timing: Timing
    broker_timeout_s: float
    me: RunIdentity


class Lease:
    """The job's lease, held by a keeper process for as long as the run lives.

    :meth:`take` returns once the lease is held (or raises :class:`RefusedError` /
    :class:`BrokerError`); :attr:`gate` is what writers check; :meth:`release` ends it.
    """

    def __init__(self, settings: KeeperSettings) -> None:
        from connector.runtime.processes import process_context

        self.settings = settings
        context = process_context()
        self._numbers = multiprocessing.sharedctypes.RawArray("d", 3)
        self._text = multiprocessing.sharedctypes.RawArray("c", _TEXT_BYTES)
        self.gate = LeaseGate(
            self._numbers,
            self._text,
            job=settings.job,
            wait_s=settings.timing.lease_s + settings.broker_timeout_s,
        )
        self.gate.beat()
        self._conn, child_end = context.Pipe()
        self._process = context.Process(  # type: ignore[attr-defined]
            target=keeper_main,
            # A forkserver's child is not ours: it dies with the forkserver, and leaves when
            # its pipe from this process closes.
            args=(
                settings,
                self.gate,
                child_end,
                self._conn,
                os.getpid() if context.get_start_method() == "fork" else None,
            ),
            name="restream-lease",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._stop = threading.Event()
        self._beats = threading.Thread(target=self._beat, name="restream-lease-beat", daemon=True)
        self._beats.start()

    @classmethod
    def take(cls, settings: KeeperSettings) -> Lease:
        """Start a keeper and wait until it holds the lease."""
        lease = cls(settings)
        try:
            lease._await_taken()
        except BaseException:
            lease.abandon()
            raise
        return lease

    def _beat(self) -> None:
        # A stopped process stops beating, and then its keeper stops renewing.
        while not self._stop.wait(0.25):
            self.gate.beat()

    def _await_taken(self) -> None:
        limit = self.settings.timing.lease_s * 3 + self.settings.broker_timeout_s
        deadline = time.monotonic() + limit
        while not self._conn.poll(0.2):
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise BrokerError(
                    f"the lease keeper of job {self.settings.job} gave no answer "
                    f"(exit code {self._process.exitcode})"
                )
        try:
            kind, text = self._conn.recv()
        except EOFError:
            self._process.join(1.0)
            raise BrokerError(
                f"the lease keeper of job {self.settings.job} exited with code "
                f"{self._process.exitcode} before taking the lease"
            ) from None
        if kind == "refused":
            raise RefusedError(text)
        if kind != "held":
            raise BrokerError(text)

    def release(self) -> None:
        """End the lease: nothing of this run can be delivered any more. Raises
        :class:`RefusedError` if it was taken over meanwhile."""
        try:
            self._conn.send(("release",))
            if self._conn.poll(self.settings.broker_timeout_s + 5):
                kind, text = self._conn.recv()
                if kind == "refused":
                    raise RefusedError(text)
                if kind != "released":
                    logger.warning("job %s: %s", self.settings.job, text)
        except (OSError, EOFError):
            pass  # the keeper is gone: the lease expires
        finally:
            self.abandon()
        reason = self.gate.reason()
        if self._numbers[1] == FENCED:
            raise RefusedError(reason)

    def abandon(self) -> None:
        """Stop the keeper without a release: the lease expires after lease_timeout."""
        self._stop.set()
        self._conn.close()
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def keeper_main(
    settings: KeeperSettings,
    gate: LeaseGate,
    conn: Connection,
    parent_end: Connection,
    parent: int | None,
) -> None:
    """The keeper process: take the lease, renew it while the run lives, release it."""
    from engine.parentdeath import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent)
    parent_end.close()
    timing = settings.timing
    io_timeout = _io_timeout(settings)
    io: KafkaLeaseIO | None = None
    try:
        io = KafkaLeaseIO(settings.client, settings.topic, settings.job, io_timeout)
        state, sent = acquire(
            io,
            settings.me,
            job=settings.job,
            topic=settings.topic,
            lease_s=timing.lease_s,
            io_timeout_s=io_timeout,
        )
        gate.open_until(sent + timing.horizon_s)
        logger.info(
            "job %s: this run holds the lease (topic %s, renewed every %.0f s)",
            settings.job,
            settings.topic,
            timing.renew_s,
        )
        conn.send(("held", ""))
        _keep(io, state, settings, gate, conn)
    except RefusedError as exc:
        with contextlib.suppress(OSError):
            conn.send(("refused", str(exc)))
    except Exception as exc:  # reported to the run, which raises it
        from confluent_kafka import KafkaException

        why = _why(exc, settings)
        # A broker that does not answer is a condition, not a bug: no traceback for it.
        expected = isinstance(exc, ConnectorError | KafkaException | TimeoutError)
        logger.debug("lease keeper failed: %s", why, exc_info=not expected)
        gate.close(BROKEN, f"job {settings.job}: the lease keeper failed: {why}")
        with contextlib.suppress(OSError):
            conn.send(("failed", f"job {settings.job}: cannot take the lease: {why}"))
    finally:
        if io is not None:
            with contextlib.suppress(Exception):
                io.close()
        conn.close()


def _io_timeout(settings: KeeperSettings) -> float:
    """How long one request to the lease topic may take: the broker's patience, at most a
    lease, and never so short that a slow broker looks dead."""
    return max(5.0, min(settings.broker_timeout_s, settings.timing.lease_s))


def _why(exc: Exception, settings: KeeperSettings) -> str:
    """What went wrong, in words (a TimeoutError has none of its own)."""
    if isinstance(exc, TimeoutError):
        return (
            f"the broker did not answer within {settings.broker_timeout_s:.0f} s (is it "
            f"reachable?) while the lease topic {settings.topic} was set up"
        )
    return str(exc) or type(exc).__name__


def _keep(
    io: KafkaLeaseIO,
    state: LeaseState,
    settings: KeeperSettings,
    gate: LeaseGate,
    conn: Connection,
) -> None:
    timing = settings.timing
    io_timeout = _io_timeout(settings)
    confirmed = time.monotonic()
    while True:
        try:
            if conn.poll(timing.renew_s):
                conn.recv()  # release
                _release(io, state, settings, gate, conn, io_timeout)
                return
        except (EOFError, OSError):
            return  # the run is gone without a word: let the lease expire
        if gate.heartbeat_age() > timing.renew_s:
            continue  # the run's process is stopped: no renewal, the gate runs out
        try:
            sent = time.monotonic()
            winner = renew(io, state, settings.me, io_timeout_s=io_timeout)
        except BrokerError as exc:
            if time.monotonic() - confirmed > settings.broker_timeout_s:
                gate.close(
                    BROKEN,
                    f"job {settings.job}: cannot renew the lease in topic {settings.topic} for "
                    f"{settings.broker_timeout_s:.0f} s (broker_timeout): {exc}",
                )
                return
            logger.warning("job %s: renewing the lease: %s (retrying)", settings.job, exc)
            continue
        if winner is not None:
            gate.close(FENCED, _taken_over(settings, winner))
            logger.error("%s", gate.reason())
            return
        confirmed = sent
        gate.open_until(sent + timing.horizon_s)


def _taken_over(settings: KeeperSettings, winner: Holder) -> str:
    return (
        f"another run of job {settings.job} took over its lease, {winner.who.describe()}, while "
        f"this run was stopped or cut off for more than lease_timeout "
        f"({settings.timing.lease_s:.0f} s); this run stopped writing and the other one "
        "finishes the job"
    )


def _release(
    io: KafkaLeaseIO,
    state: LeaseState,
    settings: KeeperSettings,
    gate: LeaseGate,
    conn: Connection,
    io_timeout: float,
) -> None:
    gate.open_until(0.0)  # the run has finished writing
    try:
        mine = io.write(LeaseRecord("release", settings.me))
        _read_through(io, state, mine, io_timeout)
    except BrokerError as exc:
        conn.send(("failed", f"cannot release the lease (it expires by itself): {exc}"))
        return
    if state.holder is None:
        conn.send(("released", ""))
        return
    # Our release did not count: another run holds the lease.
    text = _taken_over(settings, state.holder)
    gate.close(FENCED, text)
    conn.send(("refused", text))
