"""engine.parentdeath: the one way children are tied to their parent's life."""

from __future__ import annotations

import sys
import threading

import pytest

from engine.parentdeath import die_with_parent_preexec


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_preexec_hook_only_from_the_main_thread() -> None:
    assert callable(die_with_parent_preexec())
    found: list[object] = []
    thread = threading.Thread(target=lambda: found.append(die_with_parent_preexec()))
    thread.start()
    thread.join()
    assert found == [None]
