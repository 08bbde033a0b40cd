"""Sections of ``docs/benchmarks.md`` that a benchmark writes itself (``chaos``, ``rest``).

Each sits between its own markers and is rewritten in place by its benchmark; the first time
it is inserted before "How these results were produced". ``l2pop bench report``, which
regenerates the rest of the page, keeps them verbatim.
"""

from __future__ import annotations

import fcntl
import re
import tempfile
from pathlib import Path

#: the self-written sections, in page order
NAMES = ("rest", "chaos")
ANCHOR = "## How these results were produced"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin: written by `l2pop bench {name} --write-docs` -->", (
        f"<!-- {name}:end -->"
    )


def replace(docs: Path, name: str, body: str) -> Path:
    """Put ``body`` (without markers) as section ``name`` of ``docs/benchmarks.md``, under
    a lock: two benchmarks may finish together."""
    begin, end = markers(name)
    new = f"{begin}\n{body.rstrip()}\n{end}\n"
    page = docs / "benchmarks.md"
    docs.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "l2pop-bench-docs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = page.read_text() if page.exists() else "# Benchmarks\n\n"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1].lstrip("\n")
            text = head + new + ("\n" + tail if tail else "")
        elif ANCHOR in text:
            head, tail = text.split(ANCHOR, 1)
            text = head + new + "\n" + ANCHOR + tail
        else:
            text = text.rstrip("\n") + "\n\n" + new
        tmp = page.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(page)
    return page


def kept(page: Path) -> list[str]:
    """The self-written sections of an existing page, markers included, in page order."""
    if not page.exists():
        return []
    text = page.read_text()
    out = []
    for name in NAMES:
        begin, end = markers(name)
        match = re.search(re.escape(begin) + r".*?" + re.escape(end), text, re.DOTALL)
        if match:
            out += [match.group(0), ""]
    return out
