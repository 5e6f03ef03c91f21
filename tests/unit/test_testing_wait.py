"""`streams.testing.wait`: deadline, interval, ignored and fatal errors, the message, the async variant."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from streams.testing import WaitTimeout, async_wait_until, unique_name, wait_until


def answers(*values: object) -> tuple[Callable[[], object], list[int]]:
    """A predicate returning `values` in turn (an exception instance is raised), the last one
    forever; and the list its poll count is kept in."""
    polls = [0]

    def predicate() -> object:
        value = values[min(polls[0], len(values) - 1)]
        polls[0] += 1
        if isinstance(value, BaseException):
            raise value
        return value

    return predicate, polls


def async_answers(*values: object) -> tuple[Callable[[], object], list[int]]:
    sync, polls = answers(*values)

    async def predicate() -> object:
        return sync()

    return predicate, polls


def polls_in(message: str) -> int:
    found = re.search(r"\((\d+) polls;", message)
    assert found, message
    return int(found.group(1))


def test_returns_the_first_truthy_value() -> None:
    predicate, polls = answers(0, None, "", {"ready": True}, "later")
    assert wait_until(predicate, timeout=5, interval=0) == {"ready": True}
    assert polls[0] == 4


def test_past_the_deadline_raises_with_the_last_value() -> None:
    predicate, polls = answers(0, [], False)
    with pytest.raises(WaitTimeout) as caught:
        wait_until(predicate, timeout=0.02, interval=0.005)
    message = str(caught.value)
    assert message.startswith("condition not met within 0.02 s")
    assert "last value False" in message
    assert polls_in(message) == polls[0] >= 2  # polled again at the deadline


def test_a_zero_timeout_polls_once() -> None:
    predicate, polls = answers(False)
    with pytest.raises(WaitTimeout, match=r"\(1 polls; last value False\)"):
        wait_until(predicate, timeout=0, interval=1)
    assert polls[0] == 1


def test_the_message_names_what_was_awaited() -> None:
    predicate, _ = answers(None)
    with pytest.raises(WaitTimeout, match=r"^worker ready not met within 0 s"):
        wait_until(predicate, timeout=0, message="worker ready")


def test_wait_timeout_is_an_assertion_error() -> None:
    assert issubclass(WaitTimeout, AssertionError)


def test_ignored_errors_count_as_not_yet() -> None:
    predicate, polls = answers(ConnectionRefusedError("not listening"), KeyError("ready"), 7)
    assert wait_until(predicate, timeout=5, interval=0, ignore=(OSError, KeyError)) == 7
    assert polls[0] == 3


def test_an_error_not_ignored_propagates_at_once() -> None:
    predicate, polls = answers(OSError("refused"), ValueError("bad"), 1)
    with pytest.raises(ValueError, match="bad"):
        wait_until(predicate, timeout=5, interval=0, ignore=(OSError,))
    assert polls[0] == 2


def test_the_last_ignored_error_is_reported_and_chained() -> None:
    error = TimeoutError("no answer")
    predicate, _ = answers(False, error)
    with pytest.raises(WaitTimeout) as caught:
        wait_until(predicate, timeout=0.02, interval=0.005, ignore=(OSError,))
    assert "last error TimeoutError('no answer')" in str(caught.value)
    assert caught.value.__cause__ is error


def test_a_value_after_an_error_replaces_it_in_the_report() -> None:
    predicate, _ = answers(OSError("refused"), 0)
    with pytest.raises(WaitTimeout, match="last value 0"):
        wait_until(predicate, timeout=0.02, interval=0.005, ignore=(OSError,))


class ChildDied(RuntimeError):
    pass


def test_fatal_errors_propagate_even_when_ignored() -> None:
    predicate, polls = answers(RuntimeError("not yet"), ChildDied("exit 1"), True)
    with pytest.raises(ChildDied):
        wait_until(predicate, timeout=5, interval=0, ignore=(Exception,), fatal=(ChildDied,))
    assert polls[0] == 2


async def test_async_awaits_an_async_predicate() -> None:
    predicate, polls = async_answers(None, 0, "done")
    assert await async_wait_until(predicate, timeout=5, interval=0) == "done"
    assert polls[0] == 3


async def test_async_takes_a_sync_predicate() -> None:
    predicate, polls = answers(False, 3)
    assert await async_wait_until(predicate, timeout=5, interval=0) == 3
    assert polls[0] == 2


async def test_async_deadline_message_and_ignore() -> None:
    predicate, polls = async_answers(OSError("refused"), None)
    with pytest.raises(WaitTimeout) as caught:
        await async_wait_until(predicate, timeout=0.02, interval=0.005, message="rows", ignore=(OSError,))
    message = str(caught.value)
    assert message.startswith("rows not met within 0.02 s")
    assert "last value None" in message
    assert polls_in(message) == polls[0] >= 2


async def test_async_errors_not_ignored_and_fatal_ones_propagate() -> None:
    predicate, _ = async_answers(KeyError("k"))
    with pytest.raises(KeyError):
        await async_wait_until(predicate, timeout=5, interval=0, ignore=(OSError,))
    predicate, polls = async_answers(ChildDied("exit 1"))
    with pytest.raises(ChildDied):
        await async_wait_until(predicate, timeout=5, interval=0, ignore=(Exception,), fatal=(ChildDied,))
    assert polls[0] == 1


def test_unique_name_is_fresh_and_safe_everywhere() -> None:
    names = [unique_name("orders") for _ in range(50)]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"orders_[0-9a-f]{12}", name) for name in names)
    assert re.fullmatch(r"t_[0-9a-f]{12}", unique_name())
