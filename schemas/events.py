"""The clickstream event envelope (version 1) and its typed payloads.

One event is one JSON object: common envelope fields plus `type` and a `properties` object whose
shape depends on `type`. Segment-spec field names (`anonymousId`, `messageId`, `userId`,
`timestamp`) are accepted as aliases so an analytics.js-style tracker can post here unchanged
apart from the URL; the collector additionally maps Segment's `track`/`page` calls (see
`streams.collector`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)

EVENT_SCHEMA_VERSION = 1
_ZERO = timedelta(0)

Id = Annotated[str, Field(min_length=1, max_length=128)]
Money = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Category = Annotated[str, Field(min_length=1, max_length=64)]


class EventType(StrEnum):
    page_view = "page_view"
    category_view = "category_view"
    product_view = "product_view"
    search = "search"
    cart_view = "cart_view"
    add_to_cart = "add_to_cart"
    remove_from_cart = "remove_from_cart"
    checkout = "checkout"
    purchase = "purchase"
    coupon_applied = "coupon_applied"
    exit_intent = "exit_intent"
    identify = "identify"
    custom = "custom"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False, populate_by_name=True)


class Utm(_Model):
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None


class Screen(_Model):
    width: int = Field(ge=0, le=100_000)
    height: int = Field(ge=0, le=100_000)


class Consent(_Model):
    """What the visitor agreed to. Without `personalization` no profile is kept for the event."""

    analytics: bool = True
    personalization: bool = True
    marketing: bool = True


class ClientGeo(_Model):
    """Location the client already knows (app GPS, shop selection); wins over IP lookup."""

    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    region: str | None = None
    city: str | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class Context(_Model):
    page_url: str | None = Field(None, max_length=4096, validation_alias=AliasChoices("page_url", "url"))
    page_path: str | None = Field(None, max_length=2048, validation_alias=AliasChoices("page_path", "path"))
    referrer: str | None = Field(None, max_length=4096)
    utm: Utm | None = Field(None, validation_alias=AliasChoices("utm", "campaign"))
    user_agent: str | None = Field(
        None, max_length=2048, validation_alias=AliasChoices("user_agent", "userAgent")
    )
    screen: Screen | None = None
    ip: str | None = Field(None, max_length=64)
    locale: str | None = Field(None, max_length=35)
    consent: Consent = Field(default_factory=Consent)
    geo: ClientGeo | None = None
    site_id: str | None = Field(None, min_length=1, max_length=64)
    """The site whose write key the collector accepted the event with (set by the collector, never
    taken from the client); None for events produced to Kafka directly or sent in open mode."""


# -- payloads -------------------------------------------------------------------------------------


class PageViewProps(_Model):
    page_type: (
        Literal["home", "category", "product", "cart", "checkout", "search", "content", "other"] | None
    ) = None
    title: str | None = Field(None, max_length=512)


class CategoryViewProps(_Model):
    category: Category


class ProductViewProps(_Model):
    product_id: Id
    category: Category | None = None
    price: Money | None = None
    currency: Currency = "EUR"


class SearchProps(_Model):
    query: str = Field(max_length=512)
    results: int | None = Field(None, ge=0)


class CartViewProps(_Model):
    cart_value: Money | None = None
    items: int | None = Field(None, ge=0)


class AddToCartProps(_Model):
    product_id: Id
    category: Category | None = None
    price: Money = 0.0
    quantity: int = Field(1, ge=1, le=10_000)
    currency: Currency = "EUR"


class RemoveFromCartProps(_Model):
    product_id: Id
    quantity: int = Field(1, ge=1, le=10_000)


class CheckoutProps(_Model):
    cart_value: Money | None = None
    currency: Currency = "EUR"
    step: int | None = Field(None, ge=0, le=100)


class PurchaseItem(_Model):
    product_id: Id
    category: Category | None = None
    price: Money
    quantity: int = Field(1, ge=1, le=10_000)
    discount: Money = 0.0
    """Discount per unit already taken off `price` (promotion, sale)."""
    coupon: str | None = Field(None, max_length=64)


class PurchaseProps(_Model):
    order_id: Id
    value: Money
    """What the visitor paid for the order, after discounts."""
    currency: Currency = "EUR"
    items: list[PurchaseItem] = Field(default_factory=list, max_length=500)
    coupon: str | None = Field(None, max_length=64)


class CouponAppliedProps(_Model):
    coupon: str = Field(min_length=1, max_length=64)
    discount_value: Money | None = None


class ExitIntentProps(_Model):
    trigger: Literal["mouse_leave", "back_button", "tab_hidden", "other"] = "mouse_leave"


class IdentifyProps(_Model):
    """Known facts about the visitor (CRM, login). Only the fields below are profiled."""

    age: int | None = Field(None, ge=0, le=130)
    gender: str | None = Field(None, max_length=32)
    traits: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=64)


class CustomProps(_Model):
    name: str = Field(min_length=1, max_length=128)
    properties: dict[str, Any] = Field(default_factory=dict, max_length=128)

    @property
    def message_id(self) -> str | None:
        """The message an outcome event (message_shown, _clicked, _dismissed) reports on: its
        `message_id` property when that is a non-empty string, else None."""
        value = self.properties.get("message_id")
        return value if isinstance(value, str) and value else None


# -- envelope -------------------------------------------------------------------------------------


class _Envelope(_Model):
    schema_version: Literal[1] = Field(1, validation_alias=AliasChoices("schema_version", "v"))
    event_id: Id = Field(validation_alias=AliasChoices("event_id", "messageId", "message_id"))
    visitor_id: Id = Field(validation_alias=AliasChoices("visitor_id", "anonymousId", "anonymous_id"))
    user_id: Id | None = Field(None, validation_alias=AliasChoices("user_id", "userId"))
    session_id: Id | None = Field(None, validation_alias=AliasChoices("session_id", "sessionId"))
    event_time: datetime = Field(validation_alias=AliasChoices("event_time", "timestamp"))
    context: Context = Field(default_factory=Context)

    @field_validator("event_time")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # Naive timestamps are taken as UTC, the Segment spec's convention.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.utcoffset() == _ZERO:
            return value  # already UTC ("Z"): skip the conversion on the hot path
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("event_time out of range") from exc


class PageView(_Envelope):
    type: Literal[EventType.page_view]
    properties: PageViewProps = Field(default_factory=PageViewProps)


class CategoryView(_Envelope):
    type: Literal[EventType.category_view]
    properties: CategoryViewProps


class ProductView(_Envelope):
    type: Literal[EventType.product_view]
    properties: ProductViewProps


class Search(_Envelope):
    type: Literal[EventType.search]
    properties: SearchProps


class CartView(_Envelope):
    type: Literal[EventType.cart_view]
    properties: CartViewProps = Field(default_factory=CartViewProps)


class AddToCart(_Envelope):
    type: Literal[EventType.add_to_cart]
    properties: AddToCartProps


class RemoveFromCart(_Envelope):
    type: Literal[EventType.remove_from_cart]
    properties: RemoveFromCartProps


class Checkout(_Envelope):
    type: Literal[EventType.checkout]
    properties: CheckoutProps = Field(default_factory=CheckoutProps)


class Purchase(_Envelope):
    type: Literal[EventType.purchase]
    properties: PurchaseProps


class CouponApplied(_Envelope):
    type: Literal[EventType.coupon_applied]
    properties: CouponAppliedProps


class ExitIntent(_Envelope):
    type: Literal[EventType.exit_intent]
    properties: ExitIntentProps = Field(default_factory=ExitIntentProps)


class Identify(_Envelope):
    type: Literal[EventType.identify]
    properties: IdentifyProps = Field(default_factory=IdentifyProps)


class Custom(_Envelope):
    type: Literal[EventType.custom]
    properties: CustomProps


Event = Annotated[
    PageView
    | CategoryView
    | ProductView
    | Search
    | CartView
    | AddToCart
    | RemoveFromCart
    | Checkout
    | Purchase
    | CouponApplied
    | ExitIntent
    | Identify
    | Custom,
    Field(discriminator="type"),
]
"""One clickstream event of any type; validate with `EVENT_ADAPTER.validate_json(raw)`."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)
