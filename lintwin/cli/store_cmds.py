"""Store commands: import and export features, list, check and upgrade a store, write synthetic features;
``--version``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import LintwinError
from ..storage.check import check_store
from ..storage.export import export_features
from ..storage.importer import import_features
from ..storage.store import FeatureStore
from ..storage.summary import store_summary
from ..storage.synthetic import write_synthetic_store
from ..storage.upgrade import upgrade_store
from ._common import app, cli_errors, echo


def _version(value: bool) -> None:
    if value:
        echo(f"lintwin {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print lintwin's version and exit")] = False,
) -> None:
    """Do two neural networks extract the same information? Fit and score affine maps between their features."""


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help=".npy, .npz, HDF5 or safetensors file of features (rows x dim)")],
    store: Annotated[Path, typer.Option("--store", help="feature store (created if missing)")],
    name: Annotated[str, typer.Option("--name", help="network name, e.g. resnet152 (letters, digits, . _ + -)")],
    split: Annotated[str, typer.Option(help="split name (letters, digits, . _ + -)")] = "train",
    key: Annotated[str | None, typer.Option(help="features array in a file of several (default: 'features', "
                                                 "or the only array besides ids and labels)")] = None,
    labels: Annotated[Path | None, typer.Option(help="file of integer labels (default: the features file's "
                                                       "'labels' entry, if any)")] = None,
    labels_key: Annotated[str | None, typer.Option(help="labels array name in a file of several")] = None,
    ids: Annotated[Path | None, typer.Option(help="sample ids of the rows: .txt (one per line) or a string array "
                                                   "(default: the features file's 'ids' entry, if any); networks "
                                                   "are paired by them")] = None,
    ids_key: Annotated[str | None, typer.Option(help="ids array name in a file of several")] = None,
    chunk_rows: Annotated[int | None, typer.Option(min=1, help="rows per zarr chunk")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing features of this network")] = False,
) -> None:
    """Import features computed elsewhere (npy, npz, HDF5, safetensors) into a feature store, with their ids and labels."""
    with cli_errors():
        s = import_features(store, file, name=name, split=split, key=key, labels=labels, labels_key=labels_key,
                            ids=ids, ids_key=ids_key, chunk_rows=chunk_rows, overwrite=overwrite)
        info = s.info(split, name)
        named = "named by their ids" if s.ids(split) is not None else "without ids"
        labelled = ", with labels" if s.labels(split) is not None else ""
        echo(f"imported {info['rows']} x {info['dim']} features of {name} into {store} [{split}], rows {named}"
             f"{labelled}")


class ExportFormat(StrEnum):
    npy = "npy"
    npz = "npz"
    hdf5 = "hdf5"
    safetensors = "safetensors"


@app.command()
def export(
    store: Annotated[Path, typer.Argument(help="feature store")],
    name: Annotated[str, typer.Option("--name", help="network (array) to export")],
    split: Annotated[str, typer.Option(help="split to export")] = "train",
    fmt: Annotated[ExportFormat, typer.Option("--format", help="npy (features, .ids.npy, .labels.npy), npz, hdf5 "
                                                              "or safetensors (ids in the metadata)")] = ExportFormat.npy,
    out: Annotated[Path | None, typer.Option(help="output file (default: NAME.SPLIT.npy/.npz/.h5/.safetensors "
                                                   "here)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output files")] = False,
) -> None:
    """Export one network's features of a split, with the split's sample ids and labels, for other tools."""
    with cli_errors():
        paths = export_features(store, name, split=split, fmt=fmt.value, out=out, overwrite=overwrite)
        extra = [f"{role} to {path}" for role, path in paths.items() if role != "features"]
        echo(f"exported features of {name} [{split}] to {paths['features']}" + (f"; {', '.join(extra)}" if extra else ""))


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="feature store")],
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON (splits, arrays, each "
                                                          "array's network, layer and pooling)")] = False,
) -> None:
    """List the splits, networks (and layers, with their pooling), shapes and completeness of a feature store."""
    with cli_errors():
        summary = store_summary(FeatureStore.open(store))
        if as_json:
            echo(json.dumps(summary, indent=2))
            return
        for split in summary["splits"]:
            classes = split["classes"]
            echo(f"{split['name']}: {split['rows']} rows" + (f", labels for {classes} classes" if classes else ""))
            for a in split["arrays"]:
                state = "complete" if a["complete"] else f"INCOMPLETE {a['rows_written']}/{a['rows']}"
                echo(f"  {a['name']}: dim {a['dim']}, chunk {a['chunk_rows']} rows, {state}")
                layer = a["layer"]
                if layer is not None:
                    per = f" ({layer['rows_per_image']} rows per image)" if layer["rows_per_image"] != 1 else ""
                    echo(f"    network {a['network']}, layer {layer['tensor']} ({layer['op']}, "
                         f"{' x '.join(map(str, layer['shape']))}), pooling {a['pooling']}{per}")


@app.command()
def check(
    store: Annotated[Path, typer.Argument(help="feature store")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Verify every chunk of every array: present, the one written there, decodes, right shape, finite."""
    with cli_errors():
        report = check_store(store, progress=not quiet)
        for line in report.lines:
            echo(line)
        for problem in report.problems:
            echo(f"  problem: {problem}")
        if not report.ok:
            raise LintwinError(f"{len(report.problems)} problem(s) in {store}, first: {report.problems[0]}")
        echo(f"{store}: {report.arrays} arrays, {report.chunks} chunks, all ok")


@app.command()
def synth(
    store: Annotated[Path, typer.Argument(help="feature store to write")],
    train: Annotated[int, typer.Option(min=1, help="training rows")] = 20000,
    val: Annotated[int, typer.Option(min=0, help="held-out rows")] = 5000,
    dim_a: Annotated[int, typer.Option(min=1, help="feature dimension of the first network")] = 512,
    dim_b: Annotated[int, typer.Option(min=1, help="feature dimension of the second network")] = 384,
    names: Annotated[tuple[str, str], typer.Option(help="the two network names")] = ("A", "B"),
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same features")] = 0,
    chunk_rows: Annotated[int | None, typer.Option(min=1, help="rows per zarr chunk")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing features of these networks")] = False,
) -> None:
    """Write a store of realistic synthetic paired features (non-negative, correlated)."""
    with cli_errors():
        write_synthetic_store(store, train=train, val=val, dim_a=dim_a, dim_b=dim_b, names=names, seed=seed,
                              chunk_rows=chunk_rows, overwrite=overwrite)
        echo(f"wrote {train} train + {val} val rows of {names[0]} ({dim_a}) and {names[1]} ({dim_b}) to {store}")


@app.command()
def upgrade(
    store: Annotated[Path, typer.Argument(help="feature store written by an older lintwin")],
) -> None:
    """Record xarray's dimension names and coordinates in a store written before lintwin recorded them.

    Only each array's metadata changes; chunks, checksums and row counts stay as they are.
    """
    with cli_errors():
        done = upgrade_store(store)
        if done:
            echo(f"recorded dimension names in {len(done)} array(s) of {store}: {', '.join(done)}")
        else:
            echo(f"{store}: every array records its dimension names already")
