"""Waiting on a condition with a deadline: the only poll-until-deadline loop of the project.

Never sleep to synchronise; wait on a condition::

    from streams.testing import wait_until, async_wait_until

    wait_until(lambda: redis.exists("k"), timeout=5, message="key written")
    rows = await async_wait_until(fetch_rows, timeout=10)   # sync or async predicate

Both return the predicate's first truthy value and raise `WaitTimeout` (an AssertionError, so
pytest reports it as a failed assertion) with the last value seen when the deadline passes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.05

Errors = tuple[type[BaseException], ...]


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


class _Polls:
    """One wait's deadline, polls counted and last value or ignored error: the state `wait_until` and
    `async_wait_until` share, so only calling the predicate and pausing differ between them.

    `with polls:` wraps one poll: it counts it, and an exception of an `ignore` type (not of a
    `fatal` one) becomes the last error instead of propagating.
    """

    __slots__ = ("deadline", "error", "fatal", "ignore", "interval", "last", "message", "polls", "timeout")

    def __init__(
        self, timeout: float, interval: float, message: str | None, ignore: Errors, fatal: Errors
    ) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout, self.interval, self.message = timeout, interval, message
        self.ignore, self.fatal = ignore, fatal
        self.polls = 0
        self.last: object = None
        self.error: BaseException | None = None

    def __enter__(self) -> _Polls:
        self.polls += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> bool:
        if error is None or not isinstance(error, self.ignore) or isinstance(error, self.fatal):
            return False
        self.error = error
        return True

    def met(self, value: T | None) -> TypeGuard[T]:
        """Whether `value`, the predicate's answer, ends the wait; if not, it is the last value."""
        if value:
            return True
        self.last, self.error = value, None
        return False

    def pause(self) -> float:
        """Seconds to sleep before the next poll; raises `WaitTimeout` once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            what = self.message or "condition"
            detail = f"last value {self.last!r}" if self.error is None else f"last error {self.error!r}"
            failure = f"{what} not met within {self.timeout} s ({self.polls} polls; {detail})"
            raise WaitTimeout(failure) from self.error
        return min(self.interval, remaining)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    message: str | None = None,
    ignore: Errors = (),
    *,
    fatal: Errors = (),
) -> T:
    """Poll `predicate` until it returns a truthy value; return that value.

    Exceptions of the types in `ignore` count as "not yet", unless they are also of a type in
    `fatal` (a dead child process under a broad `ignore`); any other exception propagates at once.
    The predicate is always polled at least once, and once more at the deadline.
    """
    polls = _Polls(timeout, interval, message, ignore, fatal)
    while True:
        with polls:
            value = predicate()
            if polls.met(value):
                return value
        time.sleep(polls.pause())


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T | None]], timeout: float = ..., interval: float = ...,  # noqa: ASYNC109
    message: str | None = ..., ignore: Errors = ..., *, fatal: Errors = ...
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T | None], timeout: float = ..., interval: float = ...,  # noqa: ASYNC109
    message: str | None = ..., ignore: Errors = ..., *, fatal: Errors = ...
) -> T: ...


async def async_wait_until(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 - same signature as wait_until
    interval: float = DEFAULT_INTERVAL_S,
    message: str | None = None,
    ignore: Errors = (),
    *,
    fatal: Errors = (),
) -> Any:
    """`wait_until` for async code: the predicate may be sync or return an awaitable; the event loop
    keeps running between polls."""
    polls = _Polls(timeout, interval, message, ignore, fatal)
    while True:
        with polls:
            result = predicate()
            value = await result if inspect.isawaitable(result) else result
            if polls.met(value):
                return value
        await asyncio.sleep(polls.pause())


def unique_name(prefix: str = "t") -> str:
    """A fresh name for a topic, consumer group, key prefix or database: `<prefix>_<12 hex>`.

    Letters, digits and underscores only, so it is valid as a Kafka topic, a Redis key part and a
    ClickHouse identifier alike.
    """
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_TIMEOUT_S",
    "WaitTimeout",
    "async_wait_until",
    "unique_name",
    "wait_until",
]
