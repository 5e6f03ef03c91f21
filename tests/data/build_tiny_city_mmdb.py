"""Build `tiny-city.mmdb`: a handful of fake networks in the shapes real city databases use.

DB-IP Lite records carry English subdivision *names* only; MaxMind GeoIP2/GeoLite2 records also
carry the subdivision `iso_code`. Both shapes are here so region tests are deterministic.
Regenerate with `.venv/bin/python tests/data/build_tiny_city_mmdb.py` (needs mmdb-writer).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TINY_CITY_MMDB = HERE / "tiny-city.mmdb"


def _dbip(country: str, region: str | None, city: str | None, lat: float, lon: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "country": {"iso_code": country, "names": {"en": country}},
        "location": {"latitude": lat, "longitude": lon},
    }
    if region is not None:
        record["subdivisions"] = [{"names": {"en": region}}]
    if city is not None:
        record["city"] = {"names": {"en": city}}
    return record


NETWORKS: dict[str, dict[str, Any]] = {
    # DB-IP shape: names, no subdivision codes
    "81.10.0.0/16": _dbip("DE", "North Rhine-Westphalia", "Cologne", 50.9333, 6.95),
    "81.30.0.0/16": _dbip("CH", "Zurich", "Zurich (Wiedikon)", 47.3619, 8.50966),
    "81.40.0.0/16": _dbip("DE", "Baden-Wurttemberg", "Stuttgart", 48.7758, 9.18293),
    "81.60.0.0/16": _dbip("NL", "South Holland", "Rotterdam", 51.9225, 4.47917),
    "81.61.0.0/16": _dbip("BE", "Flanders", "Antwerp", 51.2194, 4.40246),
    "2a00:1000::/32": _dbip("AT", "Vienna", "Vienna", 48.2082, 16.3738),
    # MaxMind shape: subdivision iso_code and several languages
    "81.20.0.0/16": {
        "country": {"iso_code": "DE", "names": {"en": "Germany", "de": "Deutschland"}},
        "subdivisions": [{"iso_code": "BY", "names": {"en": "Bavaria", "de": "Bayern"}}],
        "city": {"names": {"en": "Munich", "de": "München"}},
        "location": {"latitude": 48.1351, "longitude": 11.582},
    },
    # sparse records
    "81.50.0.0/16": {"country": {"iso_code": "FR"}},
    "81.51.0.0/16": {"registered_country": {"iso_code": "IE"}},
    "81.52.0.0/16": {"continent": {"code": "EU"}},
    "81.53.0.0/16": _dbip("PL", "Masovia", "Warsaw", 52.2297, 21.0122),
    # a private range that a sloppy database might contain: lookups must still say "unknown"
    "10.0.0.0/8": _dbip("DE", "Berlin", "Berlin", 52.52, 13.405),
}


def build(path: Path = TINY_CITY_MMDB) -> Path:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="Tessera-Test-City",
        languages=["en", "de"],
        description="Tessera unit-test city database (fake data)",
    )
    for network, record in NETWORKS.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


if __name__ == "__main__":
    sys.stdout.write(f"{build()}\n")
