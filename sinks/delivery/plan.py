"""Delivery decisions, pure: whether a message is delivered at all (not a holdout record), which
adapter takes it, which webhook target, what is signed, how long to wait before each retry, what an
e-mail says. Values in, values out; the adapters and the runner (`streams.delivery`) do the I/O.

**Webhook signature** (like Stripe's): header ``Tessera-Signature: t=<unix seconds>,v1=<hex>``
where ``<hex>`` is HMAC-SHA256 with the target's secret over ``"<t>." + body`` (the exact bytes
POSTed). A receiver recomputes it over the raw body, compares in constant time and refuses a ``t``
older than its tolerance (replays); `verify_signature` does exactly this.

**Retries**: attempt 1 at once, attempt k+1 after ``min(base · 2^(k-1), cap)`` seconds, at most
``max_attempts`` attempts in all (`retry_delays`).

**E-mail**: the subject and body are `string.Template` texts (``$name`` / ``${name}``) filled from
the message's payload and ``message_id``, ``visitor_id``, ``kind``, ``rule``, ``segment``. The
texts come from the payload's ``subject`` and ``body`` when given, else from `EMAIL_TEMPLATES` by
``payload.template``, else a generic text naming the message's kind. A placeholder without a value
stays as written (`safe_substitute`). The recipient is ``payload.to`` or ``payload.email``, else the
visitor's ``email`` trait (looked up by the runner).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from typing import Any

from schemas.messages import Message

SIGNATURE_HEADER = "Tessera-Signature"
MESSAGE_ID_HEADER = "Tessera-Message-Id"

DEFAULT_ROUTES: dict[str, str] = {"onsite": "inbox", "email": "email", "crm": "webhook", "ads": "audience"}
"""Channel → adapter when `TESSERA_DELIVERY_ROUTES` does not say otherwise."""


def route(message: Message, routes: Mapping[str, str]) -> str | None:
    """The adapter that takes `message` (by its channel), or None when no route is configured."""
    return routes.get(str(message.channel))


def is_holdout(message: Message) -> bool:
    """Whether `message` records what a campaign's holdout visitor WOULD have got: no channel
    delivers it (read tolerantly: messages before version 2 carry no `holdout`)."""
    return bool(getattr(message, "holdout", False))


def campaign_of(message: Message) -> str | None:
    """The message's campaign when its producer sets one (a field newer messages may carry)."""
    value = getattr(message, "campaign", None)
    return str(value) if value else None


def target_key(message: Message, known: Mapping[str, Any]) -> str | None:
    """Which webhook target of `known` a message goes to: its campaign's, else its rule's, else its
    channel's (the first of those names that is configured), else None."""
    for name in (campaign_of(message), message.rule, str(message.channel)):
        if name and name in known:
            return name
    return None


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Tessera-Signature` header value: ``t=<timestamp>,v1=<HMAC-SHA256 hex>``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """Whether `header` signs `body` with `secret`, made at most `tolerance_s` before `now`."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def retry_delays(max_attempts: int, base_s: float, cap_s: float) -> list[float]:
    """Seconds to wait before attempts 2..max_attempts: exponential from `base_s`, capped."""
    return [min(base_s * 2**k, cap_s) for k in range(max(max_attempts - 1, 0))]


RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers worth another attempt (timeouts, too early, rate limited); other 4xx are final."""


def retryable(status: int) -> bool:
    """Whether an HTTP answer with `status` (not 2xx) may succeed on another attempt."""
    return status >= 500 or status in RETRY_STATUSES


# -- e-mail ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    subject: str
    body: str


EMAIL_TEMPLATES: dict[str, EmailTemplate] = {
    "cart_coupon": EmailTemplate(
        subject="Your cart is waiting: a coupon for you",
        body="Hello,\n\nyou left items worth $cart_value in your cart. Complete your order within "
        "$coupon_valid_for and save $discount_percent %.\n\nYour shop\n",
    ),
    "cart_reminder": EmailTemplate(
        subject="You left something in your cart",
        body="Hello,\n\nyour cart still holds $cart_items items worth $cart_value.\n\nYour shop\n",
    ),
}
"""Templates a trigger rule names in ``payload.template`` (`segments/default.yaml`'s e-mails)."""

GENERIC_TEMPLATE = EmailTemplate(subject="$kind", body="$payload_text\n")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    body: str


def render_email(message: Message) -> RenderedEmail:
    """Subject and body of `message` (see the module docstring)."""
    payload = message.payload
    named = EMAIL_TEMPLATES.get(str(payload.get("template", "")))
    template = named or GENERIC_TEMPLATE
    own_subject, own_body = payload.get("subject"), payload.get("body")
    subject = own_subject if isinstance(own_subject, str) else template.subject
    body = own_body if isinstance(own_body, str) else template.body
    values: dict[str, Any] = {k: _text(v) for k, v in payload.items()}
    values.update(
        message_id=message.message_id,
        visitor_id=message.visitor_id,
        kind=str(message.kind),
        rule=message.rule,
        segment=message.segment or "",
        payload_text="\n".join(f"{k}: {_text(v)}" for k, v in sorted(payload.items())),
    )
    return RenderedEmail(Template(subject).safe_substitute(values), Template(body).safe_substitute(values))


def recipient_in_payload(message: Message) -> str | None:
    """The address a message names itself (``payload.to`` or ``payload.email``)."""
    for key in ("to", "email"):
        value = message.payload.get(key)
        if isinstance(value, str) and "@" in value:
            return value.strip()
    return None


def email_message_id(message_id: str, domain: str) -> str:
    """The RFC 5322 ``Message-ID`` of a message: the same for every send of one message id."""
    return f"<{message_id}@{domain}>"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)
