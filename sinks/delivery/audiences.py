"""Ad audiences as upload files: Meta Custom Audience and Google Ads Customer Match.

An audience is a segment. Each export run writes, per audience, the visitors who joined it since the
last run (``add``) and those who left (``remove``), each in both platforms' formats, identifiers
normalised and hashed as the platforms document (below). Which visitors joined and left is decided by
`fold_changes` and `audience_diff` (pure); the runner `streams.delivery.export_audiences` reads the
`segment-changes` topic and the profiles' traits and writes the files through `AudienceFiles`.

Identifiers come from the visitor's traits (identify calls: ``email``, ``phone``, ``first_name`` /
``firstName``, ``last_name`` / ``lastName``, ``zip`` / ``postal_code``, ``city``, ``state``,
``country``; the profile's geo country when no trait names one). A visitor with no e-mail and no
phone usable after normalisation is counted and skipped.

**Meta Custom Audience** (Marketing API "Customer File Custom Audiences", *Hashing and Normalizing
Data*; Business Help "How to format a customer list"): columns ``email, phone, fn, ln, zip, ct, st,
country``, every value SHA-256 hex of its normalised form:

- ``email``: trim leading and trailing whitespace, lowercase (``" John.Doe@Gmail.com "`` →
  ``john.doe@gmail.com``; no Gmail rule);
- ``phone``: digits only, with the country code and without leading zeros or ``+``
  (``+49 (0)30 1234567``… see `e164`; Meta's form is E.164 without the ``+``: ``49301234567``);
- ``fn``, ``ln``: lowercase, letters only (a–z and UTF-8 letters such as é, ü), no punctuation or
  spaces;
- ``ct``: lowercase, letters only, no spaces or punctuation; ``st``: lowercase; ``zip``: lowercase,
  no spaces or dashes (US: the first 5 digits);
- ``country``: ISO 3166-1 alpha-2, lowercase (``de``).

**Google Ads Customer Match** (Google Ads Help "Customer Match data file upload", Google Ads API /
Display & Video 360 "Prepare user data"): columns ``Email, Phone, First Name, Last Name, Country,
Zip`` (the upload template's headers); ``Email``, ``Phone``, ``First Name``, ``Last Name`` SHA-256
hex of the normalised form, ``Country`` and ``Zip`` **not hashed** ("do not hash country, zip"):

- ``Email``: remove whitespace, lowercase. Google documents removing the dots before
  ``@gmail.com`` / ``@googlemail.com`` for *enhanced conversions* and Campaign Manager 360, not for
  Customer Match, so the Customer Match file keeps them (`google_enhanced_email` applies that rule
  for the places that ask for it); no ``+`` suffix is removed anywhere;
- ``Phone``: E.164 with the ``+`` (``+49301234567``);
- ``First Name``, ``Last Name``: remove whitespace, lowercase (punctuation kept);
- ``Country``: ISO 3166-1 alpha-2 (``DE``); ``Zip``: as given, whitespace trimmed.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

CALLING_CODES: dict[str, str] = {
    "de": "49", "at": "43", "ch": "41", "nl": "31", "be": "32", "lu": "352", "fr": "33", "it": "39",
    "es": "34", "pt": "351", "gb": "44", "ie": "353", "dk": "45", "se": "46", "no": "47", "fi": "358",
    "pl": "48", "cz": "420", "us": "1", "ca": "1",
}  # fmt: skip
"""Country → calling code, to complete a national number (``030 1234567`` with country DE)."""

META_COLUMNS = ("email", "phone", "fn", "ln", "zip", "ct", "st", "country")
GOOGLE_COLUMNS = ("Email", "Phone", "First Name", "Last Name", "Country", "Zip")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- normalisation ---------------------------------------------------------------------------------


def meta_email(raw: str) -> str | None:
    email = raw.strip().lower()
    return email if "@" in email else None


def google_email(raw: str) -> str | None:
    email = re.sub(r"\s+", "", raw).lower()
    return email if "@" in email else None


def google_enhanced_email(raw: str) -> str | None:
    """Google's enhanced-conversions / CM360 rule: as `google_email`, and the dots of the local part
    removed for ``gmail.com`` and ``googlemail.com`` addresses."""
    email = google_email(raw)
    if email is None:
        return None
    local, _, domain = email.rpartition("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
    return f"{local}@{domain}"


def e164(raw: str, country: str | None = None) -> str | None:
    """``+<country code><number>``: an international number (``+`` or ``00``) as it is, a national
    one (leading ``0``) completed with `country`'s calling code; None when it cannot be told."""
    text = raw.strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    if text.startswith("+"):
        # "+49 (0)30 …": the national trunk zero written in brackets is not dialled internationally.
        digits = re.sub(r"\D", "", re.sub(r"\(0\)", "", text))
    elif digits.startswith("00"):
        digits = digits[2:]
    else:
        code = CALLING_CODES.get((country or "").lower())
        if code is None:
            return None
        digits = code + digits.lstrip("0")
    digits = digits.lstrip("0")
    return f"+{digits}" if 8 <= len(digits) <= 15 else None


def meta_phone(raw: str, country: str | None = None) -> str | None:
    number = e164(raw, country)
    return number[1:] if number else None


def meta_name(raw: str) -> str | None:
    """Lowercase letters only (UTF-8 letters kept, punctuation, digits and spaces removed)."""
    name = "".join(ch for ch in unicodedata.normalize("NFC", raw.strip().lower()) if ch.isalpha())
    return name or None


def google_name(raw: str) -> str | None:
    name = re.sub(r"\s+", "", raw).lower()
    return name or None


def meta_zip(raw: str, country: str | None = None) -> str | None:
    code = re.sub(r"[\s-]", "", raw).lower()
    if (country or "").lower() == "us":
        code = code[:5]
    return code or None


def country_code(raw: str | None) -> str | None:
    code = (raw or "").strip()
    return code.lower() if re.fullmatch(r"[A-Za-z]{2}", code) else None


# -- identifiers of one visitor --------------------------------------------------------------------


def _trait(traits: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = traits.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return None


@dataclass(frozen=True, slots=True)
class Identifiers:
    """A visitor's raw identifiers, as its traits carry them."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    zip: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None

    @classmethod
    def from_traits(cls, traits: Mapping[str, Any], geo_country: str | None = None) -> Identifiers:
        return cls(
            email=_trait(traits, "email", "Email"),
            phone=_trait(traits, "phone", "Phone", "phone_number"),
            first_name=_trait(traits, "first_name", "firstName", "firstname"),
            last_name=_trait(traits, "last_name", "lastName", "lastname"),
            zip=_trait(traits, "zip", "postal_code", "postalCode", "zip_code"),
            city=_trait(traits, "city"),
            state=_trait(traits, "state"),
            country=country_code(_trait(traits, "country", "country_code")) or country_code(geo_country),
        )


def meta_row(ids: Identifiers) -> dict[str, str] | None:
    """The visitor's Meta row (hashed), or None without a usable e-mail or phone."""
    email = meta_email(ids.email) if ids.email else None
    phone = meta_phone(ids.phone, ids.country) if ids.phone else None
    if email is None and phone is None:
        return None
    plain = {
        "email": email,
        "phone": phone,
        "fn": meta_name(ids.first_name) if ids.first_name else None,
        "ln": meta_name(ids.last_name) if ids.last_name else None,
        "zip": meta_zip(ids.zip, ids.country) if ids.zip else None,
        "ct": meta_name(ids.city) if ids.city else None,
        "st": ids.state.strip().lower() or None if ids.state else None,
        "country": ids.country,
    }
    return {column: sha256_hex(value) if value else "" for column, value in plain.items()}


def google_row(ids: Identifiers) -> dict[str, str] | None:
    """The visitor's Customer Match row, or None without a usable e-mail or phone."""
    email = google_email(ids.email) if ids.email else None
    phone = e164(ids.phone, ids.country) if ids.phone else None
    if email is None and phone is None:
        return None
    first = google_name(ids.first_name) if ids.first_name else None
    last = google_name(ids.last_name) if ids.last_name else None
    return {
        "Email": sha256_hex(email) if email else "",
        "Phone": sha256_hex(phone) if phone else "",
        "First Name": sha256_hex(first) if first else "",
        "Last Name": sha256_hex(last) if last else "",
        "Country": (ids.country or "").upper(),
        "Zip": (ids.zip or "").strip(),
    }


# -- membership: which visitors joined and left ----------------------------------------------------


@dataclass(slots=True)
class AudienceState:
    """What the last export run left: the members of each audience (as the changes read so far say),
    the visitors uploaded to it (members with identifiers), and the next offset per partition of the
    segment-changes topic."""

    members: dict[str, set[str]] = field(default_factory=dict)
    uploaded: dict[str, set[str]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "members": {a: sorted(v) for a, v in sorted(self.members.items())},
            "uploaded": {a: sorted(v) for a, v in sorted(self.uploaded.items())},
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AudienceState:
        return cls(
            members={a: set(v) for a, v in data.get("members", {}).items()},
            uploaded={a: set(v) for a, v in data.get("uploaded", {}).items()},
            offsets={int(p): int(o) for p, o in data.get("offsets", {}).items()},
        )


def fold_changes(
    members: dict[str, set[str]], changes: Iterable[tuple[str, str, str]], audiences: frozenset[str] | None
) -> None:
    """Apply (visitor, segment, transition) changes, in topic order, to `members` (only the
    segments of `audiences`; None: every segment)."""
    for visitor, segment, transition in changes:
        if audiences is not None and segment not in audiences:
            continue
        if transition == "entered":
            members.setdefault(segment, set()).add(visitor)
        else:
            members.get(segment, set()).discard(visitor)


@dataclass(frozen=True, slots=True)
class AudienceDiff:
    audience: str
    add: list[str]
    remove: list[str]
    skipped: int
    """Members not uploaded because they have no usable e-mail or phone."""


def audience_diff(
    audience: str, members: set[str], uploaded: set[str], uploadable: Mapping[str, bool]
) -> AudienceDiff:
    """Who to add (members with identifiers not uploaded yet) and remove (uploaded, no longer
    members); `uploadable` says for each member whether it has a usable identifier."""
    add = sorted(v for v in members - uploaded if uploadable.get(v, False))
    skipped = sum(1 for v in members - uploaded if not uploadable.get(v, False))
    remove = sorted(uploaded - members)
    return AudienceDiff(audience, add, remove, skipped)


# -- files -----------------------------------------------------------------------------------------


def _writer(handle: TextIO, columns: tuple[str, ...]) -> csv.DictWriter[str]:
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    return writer


def write_audience_files(
    folder: Path, run: str, diff: AudienceDiff, identifiers: Mapping[str, Identifiers]
) -> list[Path]:
    """`<folder>/<run>/<audience>.<meta|google>.<add|remove>.csv` for `diff`, each with its header
    (an empty list still gets its header file). Rows are written as they are made (streamed)."""
    out = folder / run
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for action, visitors in (("add", diff.add), ("remove", diff.remove)):
        meta_path = out / f"{diff.audience}.meta.{action}.csv"
        google_path = out / f"{diff.audience}.google.{action}.csv"
        with meta_path.open("w", newline="") as meta_file, google_path.open("w", newline="") as google_file:
            meta = _writer(meta_file, META_COLUMNS)
            google = _writer(google_file, GOOGLE_COLUMNS)
            for visitor in visitors:
                ids = identifiers.get(visitor)
                if ids is None:
                    continue
                meta_values = meta_row(ids)
                google_values = google_row(ids)
                if meta_values is not None:
                    meta.writerow(meta_values)
                if google_values is not None:
                    google.writerow(google_values)
        written += [meta_path, google_path]
    return written
