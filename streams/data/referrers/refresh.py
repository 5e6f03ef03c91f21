"""`python -m streams.data.referrers.refresh [--ref REF]`: replace the shipped lists with upstream's.

Resolves `REF` (default: the default branch) to a commit of matomo-org/searchengine-and-social-list,
downloads SearchEngines.yml, Socials.yml, AIAssistants.yml and LICENSE at that commit, checks that
each list parses with the shape `streams.core.traffic` reads, then writes them beside this file and
records the commit in README.md. Nothing is written when a download or a check fails. Run by hand;
tests and the worker never call it.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from streams.logging import configure_logging, get_logger

log = get_logger(__name__)

REPOSITORY = "matomo-org/searchengine-and-social-list"
HERE = Path(__file__).resolve().parent
LISTS = ("SearchEngines.yml", "Socials.yml", "AIAssistants.yml")
_COMMIT_RE = re.compile(r"commit `[0-9a-f]{40}` \(\d{4}-\d{2}-\d{2}\)")


def _get(url: str, timeout: float = 30.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "tessera-referrer-refresh"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
    return body


def resolve(ref: str | None) -> tuple[str, str]:
    """(commit sha, commit date YYYY-MM-DD) of `ref` (branch, tag or sha; None: default branch)."""
    url = f"https://api.github.com/repos/{REPOSITORY}/commits/{ref or 'HEAD'}"
    data: Any = json.loads(_get(url))
    date = datetime.fromisoformat(data["commit"]["committer"]["date"].replace("Z", "+00:00"))
    return str(data["sha"]), date.astimezone(UTC).date().isoformat()


def check(name: str, text: str) -> None:
    """Raise ValueError unless `text` is a list of the shape `streams.core.traffic` reads."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or len(data) < 5:
        raise ValueError(f"{name}: not a mapping of names")
    for entry_name, entry in data.items():
        if name == "SearchEngines.yml":
            ok = isinstance(entry, list) and all(
                isinstance(e, dict) and isinstance(e.get("urls"), list) for e in entry
            )
        else:
            ok = isinstance(entry, list) and all(isinstance(u, str) for u in entry)
        if not ok:
            raise ValueError(f"{name}: unexpected entry {entry_name!r}")


def refresh(ref: str | None) -> str:
    """Download, check, write; returns the commit now shipped."""
    sha, date = resolve(ref)
    files: dict[str, bytes] = {}
    for name in (*LISTS, "LICENSE"):
        files[name] = _get(f"https://raw.githubusercontent.com/{REPOSITORY}/{sha}/{name}")
        if name in LISTS:
            check(name, files[name].decode("utf-8"))
    for name, body in files.items():
        (HERE / name).write_bytes(body)
    readme = HERE / "README.md"
    readme.write_text(_COMMIT_RE.sub(f"commit `{sha}` ({date})", readme.read_text(encoding="utf-8")))
    log.info("referrer_lists_refreshed", commit=sha, date=date, files=sorted(files))
    return sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="branch, tag or commit (default: the default branch)")
    args = parser.parse_args()
    configure_logging()
    refresh(args.ref)


if __name__ == "__main__":
    main()
