"""E-mail channel over SMTP (stdlib `smtplib` in a worker thread; one connection per message).

The mail: ``From`` the configured sender, ``To`` the recipient, ``Subject`` and a plain-text body
rendered by `sinks.delivery.plan.render_email`, ``Message-ID: <message_id@domain>`` (the sender's
domain; the same for every send of one message, so a mailbox or relay that dedupes by Message-ID
drops a redelivery), ``Tessera-Message-Id`` and ``Date``. The recipient is ``payload.to`` /
``payload.email``, else the visitor's ``email`` trait from `contacts`; none is `undeliverable`.
SMTP 4xx answers and connection errors are tried again with the same back-off as webhooks; a 5xx
answer (a refused recipient or sender) is final.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formatdate

import structlog

from schemas.messages import Message
from sinks.delivery import Attempt, DeliveryResult, DeliveryStatus, send_with_retries
from sinks.delivery.plan import (
    MESSAGE_ID_HEADER,
    email_message_id,
    recipient_in_payload,
    render_email,
    retry_delays,
)

log = structlog.get_logger(__name__)

Contacts = Callable[[str], Awaitable[str | None]]
"""visitor id → e-mail address (the visitor's `email` trait), or None."""
Sleep = Callable[[float], Awaitable[object]]


async def no_contacts(visitor_id: str) -> str | None:
    return None


class EmailSender:
    """`ChannelSender` for e-mail over SMTP."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        contacts: Contacts = no_contacts,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.domain = sender.rsplit("@", 1)[-1].strip("> ") or "tessera.local"
        self.contacts = contacts
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s
        self.delays = retry_delays(max_attempts, backoff_s, backoff_max_s)
        self.sleep = sleep

    def compose(self, message: Message, recipient: str) -> EmailMessage:
        rendered = render_email(message)
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = recipient
        mail["Subject"] = rendered.subject
        mail["Message-ID"] = email_message_id(message.message_id, self.domain)
        mail[MESSAGE_ID_HEADER] = message.message_id
        mail["Date"] = formatdate(message.event_time.timestamp(), usegmt=True)
        mail.set_content(rendered.body)
        return mail

    def _send_blocking(self, mail: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(mail)

    async def send(self, message: Message) -> DeliveryResult:
        recipient = recipient_in_payload(message) or await self.contacts(message.visitor_id)
        if not recipient:
            return DeliveryResult(
                message.message_id,
                self.name,
                DeliveryStatus.undeliverable,
                0,
                "no e-mail address for the visitor",
            )
        mail = self.compose(message, recipient)

        async def attempt_once() -> Attempt:
            try:
                await asyncio.to_thread(self._send_blocking, mail)
                return True, "", False
            except smtplib.SMTPResponseException as exc:
                return False, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:500], exc.smtp_code < 500
            except smtplib.SMTPRecipientsRefused as exc:
                return False, f"recipient refused: {exc.recipients!r}"[:500], False
            except (smtplib.SMTPException, OSError) as exc:
                return False, f"{type(exc).__name__}: {exc}"[:500], True

        return await send_with_retries(
            message.message_id, self.name, self.delays, self.sleep, attempt_once, "delivery.email"
        )

    async def close(self) -> None:
        return None
