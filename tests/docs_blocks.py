"""The code blocks of the documentation (README.md, docs/ and the pages made from other files), as run.

A page is a script a reader can follow top to bottom in an empty folder that looks like the
repository's root: its ``models/`` (the committed networks) beside them, and ``../shared`` when the
shared data are there. ``bash`` and ``python`` blocks run in order, in one folder and one shell, so a
later block sees the files and variables of earlier ones. ``json`` blocks are parsed (and a
``preprocess`` entry checked). ``text`` blocks (outputs, layouts) and unlabelled ones are not run.

A block is left out only with a reason written in the page, on the line just before it::

    <!-- docs-test: skip: the reason -->
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = {"bash", "python"}
CHECKED = {"json"}
NOT_RUN = {"text", ""}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")
_MARK = "@@docs-block"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # the reason given in the page, when the block is not run

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'unlabelled'})"


def doc_pages() -> list[Path]:
    """README.md, every Markdown page under docs/, and the files the site shows as pages."""
    return [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "bench" / "README.md",
            *sorted((ROOT / "docs").rglob("*.md"))]


def page_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        indent = len(m["indent"])
        code = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        blocks.append(Block(page, text.count("\n", 0, m.start()) + 1, m["lang"], code,
                            skip["reason"] if skip else None))
    return blocks


def page_script(blocks: list[Block]) -> str:
    """One bash script running a page's blocks in order, each announced by a marker line on both streams."""
    parts = ["set -euo pipefail"]
    for i, b in enumerate(blocks):
        if b.lang not in RUN or b.skip is not None:
            continue
        parts.append(f"echo '{_MARK} {i}'; echo '{_MARK} {i}' >&2")
        if b.lang == "bash":
            parts.append(b.code)
        else:
            assert "__LINTWIN_DOCS_PY__" not in b.code
            parts.append(f"python - <<'__LINTWIN_DOCS_PY__'\n{b.code}__LINTWIN_DOCS_PY__")
    return "\n".join(parts) + "\n"


def split_output(stream: str) -> tuple[dict[int, str], int | None]:
    """Per-block output (block index → text) and the last block that started."""
    out: dict[int, str] = {}
    current = None
    for line in stream.splitlines(keepends=True):
        if line.startswith(_MARK):
            current = int(line.split()[1])
            out[current] = ""
        elif current is not None:
            out[current] += line
    return out, current


def make_workdir(path: Path) -> Path:
    """An empty folder that looks like the repository's root: a copy of ``models/``, ``../shared`` linked."""
    work = path / "repo"
    shutil.copytree(ROOT / "models", work / "models",
                    ignore=shutil.ignore_patterns("imagenet", "__pycache__", "*.pyc"))
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (path / "shared").symlink_to(shared, target_is_directory=True)
    return work
