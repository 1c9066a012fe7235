"""Every code block of the user guide pages runs: Python blocks, bash blocks (one shell per page), JSON sidecars."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lintwin.networks.images import DEFAULT_FASHION_MNIST
from lintwin.networks.preprocess import Preprocess

GUIDE = ROOT / "docs" / "guide"
PAGES = sorted(GUIDE.glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT)}


needs_fashion = pytest.mark.skipif(not DEFAULT_FASHION_MNIST.is_dir(),
                                   reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}")


def test_the_guide_has_pages_with_code():
    assert {p.name for p in PAGES} >= {"preprocessing.md", "results.md", "output-formats.md"}
    assert all(blocks(p, "python") or blocks(p, "bash") for p in PAGES)


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_local_links_resolve(page):
    """Links to other pages, results and figures (relative, outside code blocks) name files that exist."""
    prose = FENCE.sub("", page.read_text())
    targets = [t.split("#")[0] for t in LINK.findall(prose) if not re.match(r"[a-z]+:|#", t)]
    assert [t for t in targets if not (page.parent / t).exists()] == []


@needs_fashion
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page):
    for code in blocks(page, "python"):
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{page.name}:\n{code}\n{r.stderr[-3000:]}"


@needs_fashion
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: p.name)
def test_bash_blocks_run(page, tmp_path):
    (tmp_path / "models").symlink_to(ROOT / "models")  # the pages run from the repository root: models/fashion/...
    script = "set -euo pipefail\n" + "\n".join(blocks(page, "bash"))
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"{page.name}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "json")], ids=lambda p: p.name)
def test_json_blocks_are_valid_preprocessing(page):
    for text in blocks(page, "json"):
        entry = json.loads(text)
        Preprocess.from_dict(entry["preprocess"])
