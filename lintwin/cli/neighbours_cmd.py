"""``lintwin neighbours``: exact mutual k-NN and CKNNA of two networks (or a matrix over several), null, size curve."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.files import atomic_write, strict_json
from ..core.outputs import check_output_dir
from ..errors import LintwinError
from ..experiments.neighbours_report import (
    alignment_text,
    curve_text,
    matrix_text,
    plot_curve,
    plot_matrix,
)
from ..experiments.neighbours_study import neighbour_matrix, neighbours
from ..storage.store import FeatureStore
from ._common import DaskOpt, ListOptions, QuietOpt, app, cli_errors, echo, maybe_dask


class MetricChoice(StrEnum):
    cosine = "cosine"
    l2 = "l2"


def parse_sizes(text: str | None) -> list[int]:
    """``--sizes 1024,16384``: positive integers, comma-separated."""
    if not text:
        return []
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise LintwinError(f"--sizes expects comma-separated row counts such as 1024,16384, got {text!r}") from None
    return sizes


def _write(out: Path, files: dict[str, bytes]) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(out / name, lambda fh, data=data: fh.write(data))
    except OSError as exc:
        raise LintwinError(f"cannot write to {out}: {exc.strerror or exc}") from None


@app.command("neighbours", cls=ListOptions)
def neighbours_cmd(
    store: Annotated[Path, typer.Argument(help="feature store")],
    out: Annotated[Path, typer.Option("--out", help="directory for the JSON and the PNG (curve, or matrix with --nets)")],
    a: Annotated[Optional[str], typer.Option("--a", help="network (or stored layer) A")] = None,
    b: Annotated[Optional[str], typer.Option("--b", help="network (or stored layer) B")] = None,
    nets: Annotated[Optional[list[str]], typer.Option(
        "--nets", help="instead of --a/--b: a matrix over these arrays, --nets a b c")] = None,
    split: Annotated[str, typer.Option(help="split to measure on")] = "train",
    k: Annotated[int, typer.Option("--k", min=1, help="neighbours per row (self excluded)")] = 10,
    metric: Annotated[MetricChoice, typer.Option(help="cosine (Huh et al.) or l2 (Euclidean)")] = MetricChoice.cosine,
    null: Annotated[int, typer.Option("--null", help="permutation-null repetitions (0: none, else >= 2)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the null, the bootstrap and the subsets")] = 0,
    sizes: Annotated[Optional[str], typer.Option(
        help="sample sizes of the curve, e.g. 1024,16384 (nested random subsets; the whole split is added)")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples of rows for mutual k-NN (0: none)")] = 1000,
    block_rows: Annotated[int, typer.Option(min=1, help="query rows per block")] = 4096,
    save_lists: Annotated[bool, typer.Option(
        "--save-lists", help="save the whole-split neighbour lists beside the store for reuse")] = False,
    reuse_lists: Annotated[bool, typer.Option(
        "--reuse-lists/--no-reuse-lists", help="reuse saved lists of these very features when present")] = True,
    dask: DaskOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Exact mutual k-NN and CKNNA (Huh et al. 2024) of A and B, with a permutation null and the curve against n."""
    with cli_errors():
        pair = a is not None or b is not None
        if pair == bool(nets):
            raise LintwinError("give either --a and --b, or --nets with two or more arrays")
        if pair and (a is None or b is None):
            raise LintwinError("give both --a and --b")
        if bootstrap == 1:
            raise LintwinError("--bootstrap needs 0 (none) or at least 2 resamples")
        check_output_dir(out, "--out")
        size_list = parse_sizes(sizes)
        s = FeatureStore.open(store)
        if nets and size_list:
            raise LintwinError("--sizes applies to a pair (--a/--b), not to --nets")
        with maybe_dask(dask) as client:
            if nets:
                if null:
                    raise LintwinError("--null applies to a pair (--a/--b), not to --nets")
                res = neighbour_matrix(s, nets, split=split, k=k, metric=metric.value, block_rows=block_rows,
                                       client=client, reuse=reuse_lists, save=save_lists, progress=not quiet)
                echo(f"{len(nets)} arrays on {split!r}: {res['rows']} rows, k = {k}, {metric.value}; "
                     f"chance k/(n-1) = {res['chance_mutual_knn']:.3g}")
                echo(matrix_text(res, "mutual_knn"))
                echo(matrix_text(res, "cknna"))
                _write(out, {"neighbours_matrix.json": json.dumps(strict_json(res), indent=2, allow_nan=False).encode()})
                png = plot_matrix(res, out / "neighbours_matrix.png")
                echo(f"wrote {out / 'neighbours_matrix.json'} and {png}")
                return
            res = neighbours(s, a, b, split=split, k=k, metric=metric.value, null=null, seed=seed, sizes=size_list,
                             n_boot=bootstrap, block_rows=block_rows, client=client, reuse=reuse_lists,
                             save=save_lists, progress=not quiet).as_dict()
        lists = "; ".join(f"{name}: {v['how']} in {v['seconds']:.1f} s ({v['rechecked_rows']} rows rechecked)"
                          for name, v in res["lists"].items())
        echo(f"{a} vs {b} on {split!r}: {res['rows']} rows, k = {k}, {metric.value}; lists {lists}")
        echo(alignment_text(res))
        echo(f"chance level k/(n-1) = {res['chance_mutual_knn']:.4g}")
        if len(res["curve"]) > 1:
            echo(curve_text(res["curve"]))
        _write(out, {"neighbours.json": json.dumps(strict_json(res), indent=2, allow_nan=False).encode()})
        png = plot_curve(res, out / "neighbours.png")
        echo(f"wrote {out / 'neighbours.json'} and {png}")
