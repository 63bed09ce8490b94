"""The job lease (connector/job/lease.py): the log rules, taking, renewing and the write gate,
against an in-memory log and a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connector.errors import BrokerError, RefusedError
from connector.job.lease import (
    BROKEN,
    FENCED,
    OPEN,
    LeaseGate,
    LeaseRecord,
    LeaseState,
    RunIdentity,
    Timing,
    acquire,
    delivery_timeout_s,
    renew,
)


def who(run: str) -> RunIdentity:
    return RunIdentity(run, f"host-{run}", 100 + len(run), "2026-01-02T03:04:05+00:00")


A, B, C = who("a"), who("bb"), who("ccc")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """One lease log; :class:`View` is a run's client of it."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, record: LeaseRecord) -> int:
        self.records.append(record.encode())
        return len(self.records) - 1


class View:
    """A run's client: writes append, reads return what it has not seen. ``before_write``
    and ``on_idle`` let other runs act at those moments; an idle read advances the clock."""

    def __init__(self, log: Log, clock: Clock) -> None:
        self.log = log
        self.clock = clock
        self.seen = 0
        self.before_write: Callable[[LeaseRecord], None] = lambda record: None
        self.on_idle: Callable[[], None] = lambda: None

    def write(self, record: LeaseRecord) -> int:
        self.before_write(record)
        return self.log.append(record)

    def read(self, timeout_s: float) -> list[tuple[int, LeaseRecord | None]]:
        if self.seen == len(self.log.records):
            self.on_idle()
        if self.seen == len(self.log.records):
            self.clock.now += timeout_s
            return []
        out = [
            (i, LeaseRecord.decode(v))
            for i, v in enumerate(self.log.records[self.seen :], self.seen)
        ]
        self.seen = len(self.log.records)
        return out


def state_of(*records: LeaseRecord | None, first: int = 0) -> LeaseState:
    state = LeaseState()
    for offset, record in enumerate(records, first):
        state.apply(offset, record)
    return state


def take(view: View, me: RunIdentity, gone: bool = False) -> tuple[LeaseState, float]:
    return acquire(
        view,
        me,
        job="j",
        topic="j.lease",
        lease_s=60.0,
        io_timeout_s=5.0,
        clock=view.clock,
        gone=lambda _who: gone,
    )


# -- the log rules --------------------------------------------------------------------------


def test_a_fresh_claim_wins_only_an_unheld_lease() -> None:
    state = state_of(LeaseRecord("claim", A), LeaseRecord("claim", B))
    assert state.held_by("a") and not state.held_by("bb")
    assert state.holder is not None and state.holder.last == 0


def test_renewals_and_releases_count_only_from_the_holder() -> None:
    state = state_of(
        LeaseRecord("claim", A),
        LeaseRecord("renew", B),
        LeaseRecord("release", B),
        LeaseRecord("renew", A),
    )
    assert state.held_by("a") and state.holder is not None and state.holder.last == 3
    state.apply(4, LeaseRecord("release", A))
    assert state.holder is None and state.position == 4
    state.apply(5, LeaseRecord("claim", B))
    assert state.held_by("bb")


def test_a_takeover_wins_only_if_the_holder_wrote_nothing_since_it_looked() -> None:
    # B saw A's claim at 0 as A's last record: its takeover expects 0.
    assert state_of(LeaseRecord("claim", A), LeaseRecord("claim", B, expect=0)).held_by("bb")
    # A renewed at 1 before B's takeover landed: the takeover loses, A keeps the lease.
    state = state_of(
        LeaseRecord("claim", A), LeaseRecord("renew", A), LeaseRecord("claim", B, expect=0)
    )
    assert state.held_by("a")
    # Two takeovers of the same silence: the first in the log wins.
    state = state_of(
        LeaseRecord("claim", A), LeaseRecord("claim", B, expect=0), LeaseRecord("claim", C, 0)
    )
    assert state.held_by("bb")
    # A takeover of an unheld lease (released meanwhile) is no claim.
    state = state_of(LeaseRecord("claim", A), LeaseRecord("release", A), LeaseRecord("claim", B, 0))
    assert state.holder is None


def test_a_log_cut_by_retention_starts_with_its_first_renewal_as_the_holder() -> None:
    state = state_of(LeaseRecord("renew", A), LeaseRecord("claim", B), first=500)
    assert state.held_by("a") and state.position == 501


def test_records_that_are_not_lease_records_are_skipped() -> None:
    assert LeaseRecord.decode(b"not json") is None
    assert LeaseRecord.decode(b'{"kind": "steal", "run": "x"}') is None
    assert LeaseRecord.decode(None) is None
    state = state_of(None, LeaseRecord("claim", A))
    assert state.held_by("a") and state.holder is not None and state.holder.last == 1


def test_a_record_survives_its_encoding() -> None:
    record = LeaseRecord("claim", RunIdentity("r", "h", 7, "2026-01-01T00:00:00+00:00", "m"), 9)
    assert LeaseRecord.decode(record.encode()) == record


# -- taking the lease ------------------------------------------------------------------------


def test_an_unheld_lease_is_taken_at_once() -> None:
    clock = Clock()
    view = View(Log(), clock)
    state, sent = take(view, A)
    assert state.held_by("a") and sent == 1000.0


def test_a_released_lease_is_taken_at_once() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    log.append(LeaseRecord("release", B))
    state, _ = take(View(log, clock), A)
    assert state.held_by("a") and clock.now == 1000.0


def test_a_holder_that_renews_while_watched_is_live_and_the_claimant_is_refused() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    view = View(log, clock)
    view.on_idle = lambda: log.append(LeaseRecord("renew", B)) if clock.now >= 1010 else None
    with pytest.raises(RefusedError) as refused:
        take(view, A)
    message = str(refused.value)
    assert message.startswith("another run of job j is live since 2026-01-02T03:04:05+00:00")
    assert "started by host-bb/102 (run bb)" in message and "wait for it or stop it" in message
    assert 1010 <= clock.now < 1011  # refused at the first sign of life, not after the lease


def test_two_runs_started_together_one_wins_and_the_other_is_refused() -> None:
    log, clock = Log(), Clock()
    first, second = View(log, clock), View(log, clock)
    # The second's claim lands right after the first's.
    second.before_write = lambda record: (
        None if log.records else first.log.append(LeaseRecord("claim", A))
    )
    second.on_idle = lambda: log.append(LeaseRecord("renew", A))  # the winner renews
    with pytest.raises(RefusedError, match="run a"):
        take(second, B)
    state = LeaseState()
    for offset, value in enumerate(log.records):
        state.apply(offset, LeaseRecord.decode(value))
    assert state.held_by("a")


def test_a_silent_holder_is_taken_over_after_the_lease_timeout() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    state, sent = take(View(log, clock), A)
    assert state.held_by("a")
    assert sent >= 1060.0  # a full lease_timeout of silence, on the claimant's own clock
    takeover = LeaseRecord.decode(log.records[-1])
    assert takeover is not None and takeover.kind == "claim" and takeover.expect == 0


def test_a_holder_known_dead_on_this_machine_is_taken_over_without_waiting() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    state, _ = take(View(log, clock), A, gone=True)
    assert state.held_by("a") and clock.now == 1000.0


def test_a_takeover_that_a_late_renewal_beats_is_refused() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    view = View(log, clock)

    def renewal_first(record: LeaseRecord) -> None:
        if record.expect is not None:  # the takeover claim: B's renewal gets in before it
            log.append(LeaseRecord("renew", B))

    view.before_write = renewal_first
    with pytest.raises(RefusedError, match="run bb"):
        take(view, A)


def test_a_lease_released_while_watched_is_claimed_afresh() -> None:
    log, clock = Log(), Clock()
    log.append(LeaseRecord("claim", B))
    view = View(log, clock)
    view.on_idle = lambda: log.append(LeaseRecord("release", B)) if clock.now >= 1005 else None
    state, _ = take(view, A)
    assert state.held_by("a") and clock.now < 1006


def test_gone_is_false_for_a_live_process_and_for_other_machines() -> None:
    here = RunIdentity.here()
    assert not here.gone()
    assert not RunIdentity("r", "h", 2**22 + 17, "t", "another-boot/pid:[1]").gone()


# -- renewing ---------------------------------------------------------------------------------


def test_a_renewal_counts_for_the_holder_and_reports_a_takeover() -> None:
    log, clock = Log(), Clock()
    view = View(log, clock)
    state, _ = take(view, A)
    assert renew(view, state, A, io_timeout_s=5.0) is None
    log.append(LeaseRecord("claim", B, expect=len(log.records) - 1))  # A looked silent to B
    winner = renew(view, state, A, io_timeout_s=5.0)
    assert winner is not None and winner.who.run == "bb"


def test_a_renewal_that_never_comes_back_is_a_broker_error() -> None:
    clock = Clock()

    class Lost(View):
        def write(self, record: LeaseRecord) -> int:
            return 10  # acknowledged, but never readable

    view = Lost(Log(), clock)
    with pytest.raises(BrokerError, match="did not come back"):
        renew(view, LeaseState(), A, io_timeout_s=1.0)


# -- the gate ---------------------------------------------------------------------------------


class Gate:
    def __init__(self) -> None:
        self.clock = Clock()
        self.numbers = [0.0, OPEN, 0.0]
        self.text = bytearray(64)
        self.on_sleep: Callable[[], None] = lambda: None
        self.gate = LeaseGate(
            self.numbers, self.text, job="j", wait_s=30.0, clock=self.clock, sleep=self.sleep
        )

    def sleep(self, seconds: float) -> None:
        self.clock.now += seconds
        self.on_sleep()


def test_the_gate_lets_writes_through_while_open() -> None:
    g = Gate()
    g.gate.open_until(1005.0)
    g.gate()
    assert g.clock.now == 1000.0


def test_the_gate_waits_for_a_renewal_once_its_time_is_up() -> None:
    g = Gate()
    g.gate.open_until(999.0)
    g.on_sleep = lambda: g.gate.open_until(1020.0) if g.clock.now >= 1002 else None
    g.gate()
    assert 1002 <= g.clock.now < 1003


def test_open_for_is_what_is_left_of_the_window_after_waiting_like_a_call() -> None:
    g = Gate()
    g.gate.open_until(1005.0)
    assert g.gate.open_for() == 5.0
    g.gate.open_until(999.0)
    g.on_sleep = lambda: g.gate.open_until(1022.0) if g.clock.now >= 1002 else None
    left = g.gate.open_for()
    assert 1002 <= g.clock.now < 1003 and left == 1022.0 - g.clock.now
    g.gate.close(FENCED, "taken over")
    with pytest.raises(RefusedError, match="taken over"):
        g.gate.open_for()


def test_a_fenced_gate_refuses_with_the_reason() -> None:
    g = Gate()
    g.gate.open_until(2000.0)
    g.gate.close(FENCED, "another run of job j took over its lease")
    with pytest.raises(RefusedError, match="another run of job j took over its lease"):
        g.gate()
    assert g.gate.reason() == "another run of job j took over its lease"


def test_a_broken_gate_is_a_broker_error() -> None:
    g = Gate()
    g.gate.close(BROKEN, "cannot renew the lease")
    with pytest.raises(BrokerError, match="cannot renew the lease"):
        g.gate()


def test_a_gate_never_renewed_gives_up_after_its_wait() -> None:
    g = Gate()
    g.gate.open_until(999.0)
    with pytest.raises(BrokerError, match="was not renewed for 30 s"):
        g.gate()
    assert 1030 <= g.clock.now < 1031


def test_the_heartbeat_age() -> None:
    g = Gate()
    g.gate.beat()
    g.clock.now += 4
    assert g.gate.heartbeat_age() == 4


# -- timing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lease", [6, 7, 10, 30, 60, 600])
@pytest.mark.parametrize("broker_timeout", [1, 5, 120])
def test_a_record_let_through_lands_or_fails_before_any_takeover(
    lease: int, broker_timeout: int
) -> None:
    timing = Timing(float(lease), float(delivery_timeout_s(lease, broker_timeout)))
    # Let through until sent + horizon, delivered or failed within delivery after that, and
    # still a margin before a takeover (no earlier than sent + lease).
    assert timing.horizon_s + timing.delivery_s + timing.margin_s <= lease
    # Renewals come often enough that a healthy holder's gate never closes.
    assert timing.horizon_s > timing.renew_s
    assert timing.delivery_s <= broker_timeout
