"""A worker's background threads run niced (`streams.priority.BackgroundThreads`); its main thread,
the event loop's, keeps its priority."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from streams.priority import BackgroundThreads


def _nice_of(tid: int | None) -> int:
    assert tid is not None
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.fixture
def background_thread() -> Iterator[threading.Thread]:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="background")
    thread.start()
    yield thread
    release.set()
    thread.join(5)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_new_threads_are_lowered_once_and_the_main_thread_is_not(background_thread: threading.Thread) -> None:
    main = threading.main_thread().native_id
    main_before = _nice_of(main)
    before = _nice_of(background_thread.native_id)
    threads = BackgroundThreads(7)

    lowered = threads.lower()

    assert _nice_of(background_thread.native_id) == max(7, before)
    assert lowered >= (1 if before < 7 else 0)
    assert _nice_of(main) == main_before
    assert threads.lower() == 0  # no thread appeared since


def test_nice_zero_changes_nothing(background_thread: threading.Thread) -> None:
    before = _nice_of(background_thread.native_id)
    threads = BackgroundThreads(0)

    assert not threads.enabled
    assert threads.lower() == 0
    assert _nice_of(background_thread.native_id) == before
