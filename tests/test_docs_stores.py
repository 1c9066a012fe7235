"""Every shell block of ``docs/guide/stores.md`` runs, in order, in a fresh folder, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "stores.md"


def test_every_shell_block_of_the_stores_guide_runs(tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) >= 3
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for block in blocks:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300, check=False)
        assert r.returncode == 0, (block, r.stdout, r.stderr)
        outputs.append(r.stdout)
    links = next(out for block, out in zip(blocks, outputs) if "ln -s" in block)
    assert links.count("refused, exit 1") == 2 and links.rstrip().endswith("all ok"), links
