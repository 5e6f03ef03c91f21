"""One planned visitor (`VisitorSpec`): who they are, where, on which device, and their own seed."""

from __future__ import annotations

from dataclasses import dataclass

from streams.simulate.devices import DeviceProfile
from streams.simulate.places import Place


@dataclass(slots=True)
class VisitorSpec:
    index: int
    """Position in the plan: orders visitors' events that share a timestamp."""
    visitor_id: str
    seed: int
    """Seeds the visitor's own generator: its events do not depend on the other visitors'."""
    persona: str
    place: Place
    device: DeviceProfile
    screen: tuple[int, int]
    locale: str
    consent: bool
    category: str | None = None
    """The big spender's category."""
    micro: str | None = None
    """The micro-segment planted on the visitor (`streams.simulate.micro`)."""
