"""Run one function call per child process, safely in a process that uses Kafka clients.

The children are forked when no Kafka client thread runs here (a fork shares memory
copy-on-write and starts at once); forking while librdkafka's threads run is unsafe, so then
they come from a forkserver, which forks a clean process (arguments are pickled). A child
that raises or dies makes :func:`run_in_processes` raise; the others are stopped.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from connector.errors import BrokerError

__all__ = ["kafka_client_threads", "process_context", "run_in_processes"]


R = TypeVar("R")


def kafka_client_threads() -> bool:
    """True if a librdkafka thread (named ``rdk:...``) runs here, or if that is unknown."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().startswith("rdk:"):
                    return True
        except OSError:
            continue  # the thread ended meanwhile
    return False


def ray_connected() -> bool:
    """True if this process is a Ray driver (the ray executor connected it): Ray's client
    threads and sockets must not be copied into a forked child either."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def process_context() -> multiprocessing.context.BaseContext:
    """fork if no Kafka client threads run in this process and it is not connected to Ray,
    else forkserver (or spawn)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and not kafka_client_threads() and not ray_connected():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_in_processes(
    target: Callable[..., R], calls: Sequence[tuple[Any, ...]], *, name: str
) -> list[R]:
    """``[target(*args) for args in calls]``, each call in its own process, concurrently.

    ``target`` must be a module-level function when the children come from a forkserver.
    Raises BrokerError naming the child if one raises or exits without an answer.
    """
    context = process_context()
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for args in calls:
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(  # type: ignore[attr-defined]
                target=_child_main, args=(sender, target, args), name=name, daemon=True
            )
            child.start()
            sender.close()
            children.append((child, receiver))
        results: list[R] = []
        for child, receiver in children:
            try:
                status, payload = receiver.recv()
            except EOFError:
                child.join()
                raise BrokerError(
                    f"{name} process {child.pid} exited with code {child.exitcode} before answering"
                ) from None
            if status != "ok":
                raise BrokerError(f"{name} process {child.pid} failed: {payload}")
            results.append(payload)
        return results
    finally:
        for child, receiver in children:
            if child.is_alive():
                child.terminate()
            child.join()
            receiver.close()


def _child_main(conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", target(*args)))
    except Exception as exc:  # reported to the parent, which raises it there
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
