"""A local webhook receiver for tests of the webhook channel (`sinks.delivery.webhook`)."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from infra.stack import free_port
from sinks.delivery.plan import MESSAGE_ID_HEADER


@dataclass
class WebhookReceiver:
    """Answers `statuses` in turn (then 200) and records every request (headers, body)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def ids(self) -> collections.Counter[str]:
        """How often each message id was posted."""
        return collections.Counter(headers[MESSAGE_ID_HEADER] for headers, _ in self.requests)


@asynccontextmanager
async def serve_webhook() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A `WebhookReceiver` on a free local port, and its URL; stopped on exit."""
    found = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()
