"""What the layer scripts share: run one ``lintwin`` command (printed first), and a command line of named steps."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def run(*args: object) -> None:
    """Run ``lintwin ARGS`` from this interpreter's environment, printing the command first."""
    cmd = ["lintwin", *map(str, args)]
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run([str(Path(sys.executable).parent / "lintwin"), *map(str, args)], check=True)


def main(doc: str, steps: dict[str, Callable[[Path], None]], out: Path) -> None:
    """``python SCRIPT STEP [--out DIR]``: run one of ``steps`` with the output folder (default ``out``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=list(steps))
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps[args.step](args.out)
