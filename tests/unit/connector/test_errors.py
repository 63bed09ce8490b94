"""The connector's errors survive pickling (they cross from the sink process to the run)."""

from __future__ import annotations

import pickle

import pytest

from connector.errors import BrokerError, ConfigError, ConnectorError, SerdeError, SinkError


def test_config_error_keeps_its_field_and_message_across_pickling() -> None:
    error = ConfigError("epoch_size (--epoch-size)", "must be at least 0")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is ConfigError
    assert back.field == error.field and back.message == error.message
    assert str(back) == str(error) == "epoch_size (--epoch-size): must be at least 0"


@pytest.mark.parametrize("kind", [BrokerError, SerdeError, SinkError, ConnectorError])
def test_every_other_error_pickles_as_itself(kind: type[ConnectorError]) -> None:
    back = pickle.loads(pickle.dumps(kind("what happened; what to do")))
    assert type(back) is kind and str(back) == "what happened; what to do"
