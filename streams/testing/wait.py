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
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.05

Errors = tuple[type[BaseException], ...]


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


def _timeout_message(
    message: str | None, timeout: float, polls: int, last: object, error: BaseException | None
) -> str:
    what = message or "condition"
    detail = f"last value {last!r}" if error is None else f"last error {error!r}"
    return f"{what} not met within {timeout} s ({polls} polls; {detail})"


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
    deadline = time.monotonic() + timeout
    polls = 0
    last: object = None
    error: BaseException | None = None
    while True:
        polls += 1
        try:
            value = predicate()
        except ignore as exc:
            if isinstance(exc, fatal):
                raise
            error = exc
        else:
            if value:
                return value
            last, error = value, None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(_timeout_message(message, timeout, polls, last, error)) from error
        time.sleep(min(interval, remaining))


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
    ignore: Errors = ...,
    *,
    fatal: Errors = ...,
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T | None],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
    ignore: Errors = ...,
    *,
    fatal: Errors = ...,
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
    deadline = time.monotonic() + timeout
    polls = 0
    last: object = None
    error: BaseException | None = None
    while True:
        polls += 1
        try:
            result = predicate()
            value = await result if inspect.isawaitable(result) else result
        except ignore as exc:
            if isinstance(exc, fatal):
                raise
            error = exc
        else:
            if value:
                return value
            last, error = value, None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(_timeout_message(message, timeout, polls, last, error)) from error
        await asyncio.sleep(min(interval, remaining))


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
