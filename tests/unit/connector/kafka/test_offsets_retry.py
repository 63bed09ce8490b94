"""Asking a briefly absent broker for watermarks asks again, within the client's timeout."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.errors import BrokerError
from connector.kafka.offsets import KafkaOffsets


class _Offset:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _FlakyAdmin:
    """Fails the first ``failures`` list_offsets calls with ``code``, then answers 7."""

    def __init__(self, failures: int, code: int) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0

    def list_offsets(self, requests: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        self.calls += 1
        out: dict[Any, Future[Any]] = {}
        for request in requests:
            future: Future[Any] = Future()
            if self.calls <= self.failures:
                future.set_exception(KafkaException(KafkaError(self.code, "No leaders found")))
            else:
                future.set_result(_Offset(7))
            out[request] = future
        return out


def _offsets(admin: _FlakyAdmin, timeout_s: float) -> KafkaOffsets:
    client = KafkaOffsets({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=timeout_s)
    client._admin = admin  # type: ignore[assignment]
    return client


def test_no_leaders_for_a_moment_is_asked_again() -> None:
    admin = _FlakyAdmin(failures=3, code=KafkaError._NOENT)
    assert _offsets(admin, 10).watermarks([("t", 0)]) == {("t", 0): (7, 7)}
    assert admin.calls == 5  # three failures, then the low and the high watermark


def test_no_leaders_past_the_timeout_fails_naming_what_it_asked() -> None:
    admin = _FlakyAdmin(failures=1000, code=KafkaError._NOENT)
    with pytest.raises(BrokerError, match="cannot get the low watermark of t/0: No leaders"):
        _offsets(admin, 0.5).watermarks([("t", 0)])


def test_an_error_that_asking_again_cannot_cure_fails_at_once() -> None:
    admin = _FlakyAdmin(failures=1000, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(BrokerError, match="cannot get the low watermark"):
        _offsets(admin, 10).watermarks([("t", 0)])
    assert admin.calls == 1
