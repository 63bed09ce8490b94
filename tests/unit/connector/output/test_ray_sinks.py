"""The sink actors' choices that need no cluster (connector.output.ray_sinks): how many, on
which nodes, and the lease window an actor keeps from the driver's word."""

from __future__ import annotations

import threading
import time

import pytest

from connector.errors import BrokerError
from connector.output.ray_sinks import LEASE_MARGIN_S, LeaseWindow, ray_sink_count, sink_nodes


def _node(node: str, cpus: float, alive: bool = True) -> dict[str, object]:
    return {"NodeID": node, "Alive": alive, "Resources": {"CPU": cpus} if cpus else {}}


def test_sink_actors_go_to_the_alive_nodes_with_cpus_in_node_id_order() -> None:
    nodes = [_node("c", 4), _node("a", 0), _node("b", 16), _node("d", 8, alive=False)]
    assert sink_nodes(nodes) == ["b", "c"]
    # A cluster of CPU-less nodes (resources given otherwise) still has somewhere to go.
    assert sink_nodes([_node("x", 0), _node("w", 0)]) == ["w", "x"]
    assert sink_nodes([]) == []


@pytest.mark.parametrize(
    ("requested", "partitions", "nodes", "count"),
    [
        (0, 12, 1, 0),  # one node: the driver's sink processes write
        (0, 12, 4, 4),  # one per node
        (0, 3, 8, 3),  # at most one per output partition
        (2, 12, 1, 2),  # asked for: also on one node
        (5, 3, 1, 3),  # never more than the partitions
        (1, 0, 1, 1),
    ],
)
def test_the_count_of_sink_actors(requested: int, partitions: int, nodes: int, count: int) -> None:
    assert ray_sink_count(requested, partitions, nodes) == count


def test_the_lease_window_is_open_for_what_the_driver_said_less_the_margin() -> None:
    window = LeaseWindow("j", wait_s=0.2)
    with pytest.raises(BrokerError, match="did not confirm the lease of job j for 0 s"):
        window()  # never opened
    window.extend(LEASE_MARGIN_S + 5.0)
    window()
    window.extend(LEASE_MARGIN_S + 1.0)  # an older word never shortens it
    window()
    shut = LeaseWindow("j", wait_s=0.2)
    shut.extend(LEASE_MARGIN_S - 0.05)  # less than the margin: closed already
    started = time.monotonic()
    with pytest.raises(BrokerError):
        shut()
    assert time.monotonic() - started >= 0.2


def test_a_closed_window_waits_for_the_drivers_next_word() -> None:
    window = LeaseWindow("j", wait_s=10.0)
    later = threading.Timer(0.2, window.extend, args=(LEASE_MARGIN_S + 5.0,))
    later.start()
    started = time.monotonic()
    window()
    assert 0.15 <= time.monotonic() - started < 5
    later.join()
