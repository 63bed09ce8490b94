"""What a failed run reports when releasing its lease finds it was taken over."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from connector.errors import BrokerError, RefusedError, SinkError
from connector.job.run import _release_after_failure

TAKEN = "another run of job j took over its lease"


class _Lease:
    def __init__(self, error: Exception | None) -> None:
        self.settings = SimpleNamespace(job="j")
        self.error = error
        self.released = 0

    def release(self) -> None:
        self.released += 1
        if self.error is not None:
            raise self.error


def _release(lease: _Lease, exc: BaseException) -> None:
    _release_after_failure(cast(Any, lease), exc)


def test_a_failure_after_a_takeover_ends_refused(caplog: pytest.LogCaptureFixture) -> None:
    # The output check of a run continued after a takeover sees the new run's records: the
    # takeover is the cause, so the run is refused (exit 2), the check's error logged.
    lease = _Lease(RefusedError(TAKEN))
    seen = SinkError("scores/0 ends with the record at offset 7: something else writes")
    with caplog.at_level(logging.ERROR), pytest.raises(RefusedError, match=TAKEN) as raised:
        _release(lease, seen)
    assert raised.value.__cause__ is seen
    assert "took the job over meanwhile" in caplog.text
    assert "something else writes" in caplog.text


def test_a_refusal_stands_as_it_is() -> None:
    lease = _Lease(RefusedError(TAKEN))
    _release(lease, RefusedError("the gate closed"))  # the caller re-raises its own error
    assert lease.released == 1


def test_an_interrupt_is_not_turned_into_a_refusal() -> None:
    _release(_Lease(RefusedError(TAKEN)), KeyboardInterrupt())


def test_a_release_that_fails_otherwise_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _release(_Lease(BrokerError("the broker is away")), SinkError("boom"))
    assert "the broker is away" in caplog.text


def test_a_failed_run_that_still_holds_its_lease_releases_it() -> None:
    lease = _Lease(None)
    _release(lease, SinkError("boom"))
    assert lease.released == 1
