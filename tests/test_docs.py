"""The documentation runs: every code block of README.md and docs/, the site's nav and its generated pages.

How blocks run, and how a page says a block is not run, is in ``tests/docs_blocks.py``. The site
itself is built with ``mkdocs build --strict`` by ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from docs_blocks import CHECKED, NOT_RUN, RUN, doc_pages, make_workdir, page_blocks, page_script, split_output

from lintwin.networks.images import DEFAULT_FASHION_MNIST
from lintwin.networks.preprocess import Preprocess

PAGES = doc_pages()
MAX_SKIPS = 10  # blocks left out, each with its reason in the page: few, and only where running is impossible
# (installs, a GPU, and benchmark runs of tens of minutes over stores of several GB, whose outputs are committed)
PAGE_TIMEOUT_S = 900
DOCS = runpy.run_path(str(ROOT / "scripts" / "docs_pages.py"), run_name="docs_pages")  # the generator of the site's reference pages


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}


def _ids(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_block_is_runnable_checked_or_plain_text():
    commands = tuple(f"lintwin {name} " for name in DOCS["cli_commands"]())
    for page in PAGES:
        for b in page_blocks(page):
            assert b.lang in RUN | CHECKED | NOT_RUN, f"{b}: a block in an unknown language is never run"
            first = b.code.lstrip().split("\n", 1)[0]
            if b.lang in NOT_RUN:  # a command in a text block would never be run: make it a bash block
                assert not first.startswith(("$ ", "python ", "python3 ", "pip ", ".venv/", *commands)), \
                    f"{b}: looks like a command; write it as a bash block"


def test_skipped_blocks_are_few_and_say_why():
    skipped = [b for p in PAGES for b in page_blocks(p) if b.skip is not None]
    assert len(skipped) <= MAX_SKIPS, "blocks left out of the docs test:\n" + "\n".join(f"{b}: {b.skip}"
                                                                                    for b in skipped)
    for b in skipped:
        assert b.lang in RUN, f"{b}: only a bash or python block can be left out"
        assert len(b.skip.split()) >= 5, f"{b}: say why the block is not run ({b.skip!r})"


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST.is_dir(), reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}"
                    " (apt-get install dataset-fashion-mnist): most pages run the bundled networks on it")
@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang in RUN and b.skip is None for b in page_blocks(p))],
                         ids=_ids)
def test_page_runs(page, tmp_path):
    blocks = page_blocks(page)
    work = make_workdir(tmp_path)
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-c", page_script(blocks)], cwd=work, env=_env(), capture_output=True, text=True,
                       timeout=PAGE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    outputs, last = split_output(r.stdout)
    if r.returncode != 0:
        failed = blocks[last] if last is not None else None
        pytest.fail(f"{failed} failed with exit status {r.returncode}:\n{failed.code if failed else ''}\n"
                    f"--- stdout ---\n{outputs.get(last, '')[-3000:]}\n--- stderr ---\n{r.stderr[-4000:]}")
    print(f"{_ids(page)}: {time.monotonic() - t0:.1f} s")
    if page.name == "stores.md":  # the link example shows two refusals and a store that checks out again
        links = next(outputs[i] for i, b in enumerate(blocks) if "ln -s" in b.code)
        assert links.count("refused, exit 1") == 2 and links.rstrip().endswith("all ok"), links


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang == "json" for b in page_blocks(p))], ids=_ids)
def test_json_blocks_parse_and_preprocessing_is_valid(page):
    for b in page_blocks(page):
        if b.lang == "json":
            entry = json.loads(b.code)
            if "preprocess" in entry:
                Preprocess.from_dict(entry["preprocess"])


def test_the_readme_set_up_commands_are_the_ones_ci_runs():
    """The README's two set-up blocks are not run by the docs test (they install lintwin); CI runs them."""
    setup = [b for b in page_blocks(ROOT / "README.md") if b.skip is not None]
    assert len(setup) == 2
    main_install, tests = (b.code.strip() for b in setup)
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command exactly"
    assert main_install.startswith("python3 -m venv .venv && .venv/bin/pip install -e . &&")
    assert main_install.endswith("&& .venv/bin/lintwin demo")
    smoke = (ROOT / ".ci" / "main_install_smoke").read_text()
    assert "bash .ci/main_install_smoke" in ci and 'pip" install -q -e .' in smoke and '"$L" demo' in smoke


# -- the site ------------------------------------------------------------------------------------------

def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for item in node for p in _nav_pages(item)]


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    generated = set(DOCS["generated_pages"]())
    assert not written & generated, "a generated page would replace a written one"
    missing = sorted((written | generated) - set(nav))
    assert not missing, f"pages not in mkdocs.yml's nav (add a line under 'User guide' or where they belong): {missing}"
    assert not set(nav) - written - generated, "nav entries without a page"


def test_the_cli_reference_lists_every_command_and_option():
    text = DOCS["cli_reference"]()
    for name, command in DOCS["cli_commands"]().items():
        section = text.split(f"## `lintwin {name}`\n", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if param.param_type_name == "option":
                for opt in param.opts + param.secondary_opts:
                    assert re.search(rf"^- `[^`]*(?<![\w-]){re.escape(opt)}(?![\w-])", section, re.MULTILINE), \
                        f"{name}: {opt} missing"
            else:
                assert f"`{param.name.upper()}" in section, f"{name}: argument {param.name} missing"
        assert "(no help)" not in section, f"{name}: an option without help"
    assert str(ROOT) not in text  # no path of the machine that built the site


def test_the_api_reference_documents_every_module():
    import pkgutil

    import lintwin

    documented = {m for mods in DOCS["api_modules"]().values() for m in mods}
    every = {m.name for m in pkgutil.walk_packages(lintwin.__path__, "lintwin.")
             if not m.name.startswith("lintwin.cli") and not any(p.startswith("_") for p in m.name.split("."))}
    assert every <= documented, f"modules without an API page: {sorted(every - documented)}"
    index = DOCS["api_pages"]()["index.md"]
    for name in lintwin.__all__:
        assert f"[`lintwin.{name}`]" in index
