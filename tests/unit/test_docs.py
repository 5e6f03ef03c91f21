"""The repository's documents hold together: every relative link resolves, and nothing points outside.

Checked for the project's Markdown documents (README.md, CHANGELOG.md, docs/*.md, bench/README.md,
bench/RESULTS.md): every relative link names a file or folder that exists in the repository, and a
`#fragment` into a Markdown file names one of its headings (GitHub's anchor rules). Links inside
code (fenced blocks, inline code) are text, not links. No file of the repository (tracked, or new
and not ignored) mentions the design notes that live outside it: the repository's own design
document is docs/ARCHITECTURE.md, and a docstring or comment that cites one of its sections
(`docs/ARCHITECTURE.md, "The time model"`) names a heading it has.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve()

DOCUMENTS: tuple[Path, ...] = (
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    ROOT / "bench" / "README.md",
    ROOT / "bench" / "RESULTS.md",
    *sorted((ROOT / "docs").glob("*.md")),
)

FORBIDDEN: tuple[str, ...] = ("DESIGN" + ".md", "../" + "shared")
"""Written split so this file does not match its own search."""

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SLUG_DROP = re.compile(r"[^\w\- ]")
_MARKDOWN_LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
_SECTION_CITATION = re.compile(r'docs/ARCHITECTURE\.md,(?:\s*\n\s*#)?\s*"([^"]{1,200})"')
_WRAP = re.compile(r"\s*\n\s*(?:#\s*)?")


def prose(text: str) -> str:
    """The Markdown without fenced code blocks and inline code (their brackets are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """The targets of the inline links (and images) of a Markdown text, in order."""
    return [match.group(1) for match in _LINK.finditer(prose(text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = _MARKDOWN_LINK_TEXT.sub(r"\1", heading).replace("`", "")
    return _SLUG_DROP.sub("", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor the headings of a Markdown file define (a repeated heading gets -1, -2, …)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


def broken_links(document: Path) -> list[str]:
    """The relative links of `document` that do not resolve, each with the reason."""
    problems: list[str] = []
    for target in links(document.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # an address on the web, not a file of the repository
        resolved = (document.parent / unquote(parts.path)).resolve() if parts.path else document
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif parts.fragment and resolved.suffix == ".md" and parts.fragment not in anchors(resolved):
            problems.append(f"{target}: no heading with the anchor #{parts.fragment}")
    return problems


def repository_files() -> list[Path]:
    """Files git tracks, plus new files it does not ignore (what the next commit can hold)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode("utf-8", "surrogateescape")
    paths = {(ROOT / name).resolve() for name in listed.split("\0") if name}
    return sorted(path for path in paths if path.is_file() and path != THIS_FILE)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    assert document.is_file(), f"{document.relative_to(ROOT)} is missing"
    assert broken_links(document) == []


def test_the_architecture_document_exists_and_is_linked_from_the_readme() -> None:
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file()
    assert "docs/ARCHITECTURE.md" in links((ROOT / "README.md").read_text(encoding="utf-8"))


def test_no_file_points_outside_the_repository_for_its_design() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {word}"
        for path in repository_files()
        for word in FORBIDDEN
        if word.encode() in path.read_bytes()
    ]
    assert offenders == [], "the design document is docs/ARCHITECTURE.md; point there instead"


def test_cited_architecture_sections_exist() -> None:
    """A citation may wrap over lines of a docstring or of `#` comments; it names a heading as is."""
    headings = {match.group(1) for match in _HEADING.finditer(ARCHITECTURE.read_text(encoding="utf-8"))}
    missing = [
        f"{path.relative_to(ROOT)}: {section}"
        for path in repository_files()
        if path.suffix in (".py", ".md", ".yaml", ".sql")
        for section in (
            _WRAP.sub(" ", match.group(1))
            for match in _SECTION_CITATION.finditer(path.read_text(encoding="utf-8", errors="replace"))
        )
        if section not in headings
    ]
    assert missing == []


def test_the_link_checker_finds_what_it_must() -> None:
    text = (
        "See [a](missing.md), [b](https://example.com/x), [c](#nowhere), `[d](ignored.md)`, "
        "![e](README.md), [f](README.md#two-commands).\n```\n[g](also-ignored.md)\n```\n"
    )
    expected = ["missing.md", "https://example.com/x", "#nowhere", "README.md", "README.md#two-commands"]
    assert links(text) == expected
    assert slug("The worker: a batch loop hosted in `Faust`") == "the-worker-a-batch-loop-hosted-in-faust"
    cited = '(docs/ARCHITECTURE.md, "The embedded stack and its\n        # known limits")'
    assert [_WRAP.sub(" ", m.group(1)) for m in _SECTION_CITATION.finditer(cited)] == [
        "The embedded stack and its known limits"
    ]
    assert slug("Eighth pass (2026-12-02, commits 3169df1–8d9f4ce)") == (
        "eighth-pass-2026-12-02-commits-3169df18d9f4ce"
    )
