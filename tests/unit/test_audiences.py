"""Ad-audience files: identifiers normalised and hashed as Meta and Google document them, the files'
headers as the upload templates require, and additions and removals from segment changes."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from sinks.delivery.audiences import (
    GOOGLE_COLUMNS,
    META_COLUMNS,
    AudienceState,
    Identifiers,
    audience_diff,
    country_code,
    e164,
    fold_changes,
    google_email,
    google_enhanced_email,
    google_name,
    google_row,
    meta_email,
    meta_name,
    meta_phone,
    meta_row,
    meta_zip,
    sha256_hex,
    write_audience_files,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("normalise", "raw", "expected"),
    [
        # Meta, "Hashing and Normalizing Data": trim, lowercase; no Gmail rule.
        (meta_email, " John.Doe@Gmail.com ", "john.doe@gmail.com"),
        (meta_email, "not-an-address", None),
        # Meta: digits only with the country code, no "+", no leading zeros.
        (meta_phone, "+1 (650) 555-1212", "16505551212"),
        (meta_phone, "001 650 555 1212", "16505551212"),
        # Meta: names lowercase, no punctuation, UTF-8 letters kept.
        (meta_name, "Mary", "mary"),
        (meta_name, "Valéria", "valéria"),
        (meta_name, "O'Brien-Smith", "obriensmith"),
        (meta_name, "Menlo Park", "menlopark"),
        # Google Customer Match: whitespace removed, lowercase; dots kept.
        (google_email, " John.Doe@Gmail.com ", "john.doe@gmail.com"),
        # Google enhanced conversions / CM360: dots before @gmail.com and @googlemail.com removed.
        (google_enhanced_email, " John.Doe@Gmail.com ", "johndoe@gmail.com"),
        (google_enhanced_email, "Jane.Doe@GoogleMail.com", "janedoe@googlemail.com"),
        (google_enhanced_email, "jane.doe+shop@example.com", "jane.doe+shop@example.com"),
        (google_name, " Mary Ann ", "maryann"),
    ],
)
def test_documented_normalisation(normalise: object, raw: str, expected: str | None) -> None:
    assert normalise(raw) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+1 650-555-1212", None, "+16505551212"),
        ("+49 (0)30 1234567", None, "+49301234567"),
        ("030 1234567", "DE", "+49301234567"),
        ("044 668 18 00", "ch", "+41446681800"),
        ("0041 44 668 18 00", None, "+41446681800"),
        ("030 1234567", None, None),  # national, country unknown: cannot be told
        ("12", "DE", None),
    ],
)
def test_e164(raw: str, country: str | None, expected: str | None) -> None:
    assert e164(raw, country) == expected


def test_zip_and_country() -> None:
    assert meta_zip("94025-1234", "us") == "94025"
    assert meta_zip("SW1A 1AA", "gb") == "sw1a1aa"
    assert country_code(" DE ") == "de"
    assert country_code("Germany") is None


def test_sha256_of_the_documented_example() -> None:
    assert (
        sha256_hex("john.doe@gmail.com") == "375320dd9ae7ed408002f3768e16cb5f28c861062fd50dff9a3bff62e9dce4ef"
    )


JOHN = Identifiers.from_traits(
    {
        "email": " John.Doe@Gmail.com ",
        "phone": "030 1234567",
        "firstName": "John",
        "last_name": "Doe",
        "zip": "10115",
        "city": "Berlin",
    },
    geo_country="DE",
)


def test_rows_of_one_visitor() -> None:
    meta = meta_row(JOHN)
    assert meta == {
        "email": sha("john.doe@gmail.com"),
        "phone": sha("49301234567"),
        "fn": sha("john"),
        "ln": sha("doe"),
        "zip": sha("10115"),
        "ct": sha("berlin"),
        "st": "",
        "country": sha("de"),
    }
    google = google_row(JOHN)
    assert google == {
        "Email": sha("john.doe@gmail.com"),
        "Phone": sha("+49301234567"),
        "First Name": sha("john"),
        "Last Name": sha("doe"),
        "Country": "DE",  # not hashed
        "Zip": "10115",  # not hashed
    }


def test_no_email_or_phone_is_no_row() -> None:
    nameless = Identifiers.from_traits({"first_name": "Ann", "plan": "registered"}, geo_country="CH")
    assert meta_row(nameless) is None
    assert google_row(nameless) is None


def test_additions_and_removals_from_segment_changes(tmp_path: Path) -> None:
    state = AudienceState()
    fold_changes(
        state.members,
        [
            ("v-john", "cart_abandoners", "entered"),
            ("v-anon", "cart_abandoners", "entered"),
            ("v-jane", "cart_abandoners", "entered"),
            ("v-jane", "cart_abandoners", "exited"),  # in and out before the export: never uploaded
            ("v-john", "frequent_buyers", "entered"),
        ],
        frozenset({"cart_abandoners"}),
    )
    assert state.members == {"cart_abandoners": {"v-john", "v-anon"}}
    identifiers = {"v-john": JOHN, "v-anon": Identifiers()}
    uploadable = {v: meta_row(ids) is not None for v, ids in identifiers.items()}

    first = audience_diff("cart_abandoners", state.members["cart_abandoners"], set(), uploadable)
    assert (first.add, first.remove, first.skipped) == (["v-john"], [], 1)
    files = write_audience_files(tmp_path, "run1", first, identifiers)
    assert sorted(p.name for p in files) == [
        "cart_abandoners.google.add.csv",
        "cart_abandoners.google.remove.csv",
        "cart_abandoners.meta.add.csv",
        "cart_abandoners.meta.remove.csv",
    ]
    with (tmp_path / "run1" / "cart_abandoners.meta.add.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == META_COLUMNS == ("email", "phone", "fn", "ln", "zip", "ct", "st", "country")
    assert rows[1][0] == sha("john.doe@gmail.com")
    with (tmp_path / "run1" / "cart_abandoners.google.add.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == GOOGLE_COLUMNS == ("Email", "Phone", "First Name", "Last Name", "Country", "Zip")
    assert rows[1][4:] == ["DE", "10115"]
    with (tmp_path / "run1" / "cart_abandoners.meta.remove.csv").open() as handle:
        assert list(csv.reader(handle)) == [list(META_COLUMNS)]  # the header alone

    # John buys: he leaves the audience, and the next run removes him.
    uploaded = set(first.add)
    fold_changes(state.members, [("v-john", "cart_abandoners", "exited")], None)
    second = audience_diff("cart_abandoners", state.members["cart_abandoners"], uploaded, uploadable)
    assert (second.add, second.remove) == ([], ["v-john"])
    write_audience_files(tmp_path, "run2", second, identifiers)
    with (tmp_path / "run2" / "cart_abandoners.google.remove.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == sha("john.doe@gmail.com")


def test_state_round_trip() -> None:
    state = AudienceState({"a": {"v1", "v2"}}, {"a": {"v1"}}, {0: 12, 3: 4})
    again = AudienceState.from_json(state.to_json())
    assert again == state
