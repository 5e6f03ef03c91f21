"""The embedded sink opens chDB from a thread at a lower CPU priority (`_in_niced_thread`)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from sinks.clickhouse import _in_niced_thread


def _own_nice() -> tuple[str, int]:
    tid = threading.get_native_id()
    return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_make_runs_in_a_thread_niced_at_least_as_asked_and_the_caller_is_unchanged() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    name, nice = _in_niced_thread(_own_nice, 7)

    assert name == "tessera-chdb-open"
    assert nice == max(7, before)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_nice_zero_runs_in_the_calling_thread() -> None:
    assert _in_niced_thread(_own_nice, 0)[0] == threading.current_thread().name


def test_a_failure_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no engine")

    with pytest.raises(ValueError, match="no engine"):
        _in_niced_thread(fail, 5)
