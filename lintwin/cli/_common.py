"""Shared pieces of the command line: the Typer app, choices, error handling, small parsers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from ..affine import AffineMap
from ..core.distributed import dask_client
from ..errors import LintwinError
from ..solvers import PrecisionWarning, RankWarning

_MAX_WARNINGS = 4  # solver warnings shown one by one before the rest are summed up

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Do two neural networks extract the same information? Fit and score affine "
                       "maps between their features.")


class Method(StrEnum):
    lstsq = "lstsq"
    adam = "adam"


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class PrecisionChoice(StrEnum):
    float32 = "float32"
    float64 = "float64"
    tf32 = "tf32"


class InitChoice(StrEnum):
    random = "random"
    lstsq = "lstsq"


class AdamVariant(StrEnum):
    tensorflow = "tensorflow"
    kingma = "kingma"


class RidgeCriterion(StrEnum):
    feature_error = "feature-error"
    agreement = "agreement"


_MULTI = ("--nets", "--heads")  # options that take several values: --nets a b c


class ListOptions(TyperCommand):
    """Let ``--nets a b c`` mean ``--nets a --nets b --nets c`` (values run to the next option)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        out, current = [], None
        for tok in args:
            if tok.startswith("-"):
                current = tok if tok in _MULTI else None
                out.append(tok)
            elif current is not None and out[-1] != current:
                out += [current, tok]
            else:
                out.append(tok)
        return super().parse_args(ctx, out)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit 1; show solver warnings as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankWarning)
        warnings.simplefilter("always", PrecisionWarning)
        try:
            yield
        except LintwinError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            shown = [w for w in caught if issubclass(w.category, (RankWarning, PrecisionWarning))]
            for w in shown[:_MAX_WARNINGS]:
                typer.echo(f"Warning: {w.message}", err=True)
            if len(shown) > _MAX_WARNINGS:  # e.g. a study of many networks: one line per map would drown the table
                rest = shown[_MAX_WARNINGS:]
                kinds = sorted({w.category.__name__ for w in rest})
                typer.echo(f"Warning: {len(rest)} more map(s) warned likewise ({', '.join(kinds)}); each map's "
                           "file records its condition and expected error", err=True)


def echo(text: str) -> None:
    typer.echo(text)


def ridge_summary(mp: AffineMap) -> str:
    """One line on how ``--ridge auto`` chose λ for a map, with the chosen λ's own CV figures."""
    cv = mp.stats["ridge_cv"]
    i = cv["lambdas"].index(cv["chosen"])
    figures = f"held-out relative error {cv['cv_error'][i]:.4f}"
    if cv.get("agreement"):
        figures += f", held-out top-1 agreement {100 * cv['agreement'][i]:.2f}%"
    return (f"{mp.name}: λ = {cv['chosen']:.4g} chosen by {cv['folds']}-fold CV over images, criterion "
            f"{cv['scored_by']} ({figures})")


# Options shared by solve, compare and study (and the Adam settings, the same in all three).
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate")]
DecayOpt = Annotated[float, typer.Option("--decay", help="Adam lr decay per iteration, in [0, 1)")]
AdamBatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Adam batch rows")]
IterationsOpt = Annotated[int, typer.Option("--iterations", min=1, help="Adam iterations")]
AdamSeedOpt = Annotated[int, typer.Option("--seed", help="Adam seed (initial weights and batches)")]
InitOpt = Annotated[InitChoice, typer.Option("--init", help="Adam start: random weights or the closed-form map")]
VariantOpt = Annotated[AdamVariant, typer.Option(
    "--adam-variant", help="Adam: tensorflow (TF1's, as the paper ran it) or kingma (Kingma & Ba's)")]
PrecisionOpt = Annotated[PrecisionChoice, typer.Option(
    "--precision", help="float32 products summed in float64, all float64, or tf32 (a GPU's tensor cores; "
                        "emulated on the CPU)")]
DeviceOpt = Annotated[DeviceChoice, typer.Option("--device", help="auto uses the GPU when CuPy sees one")]
FoldsOpt = Annotated[int, typer.Option("--folds", min=2, help="folds for --ridge auto")]
DaskOpt = Annotated[Optional[str], typer.Option(
    "--dask", help="accumulate on a Dask cluster: scheduler address or local[:N]")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


RIDGE_HELP = ("ridge λ on the weights: one number (both directions), two as 'λ_AB,λ_BA', or 'auto' for "
              "K-fold CV over images; λ is in units of the summed co-moments, so it grows with the row count")


@contextmanager
def maybe_dask(address: Optional[str]) -> Iterator[object]:
    """A Dask client for ``--dask ADDRESS``, or None without it."""
    if address is None:
        yield None
        return
    with dask_client(address, echo=lambda msg: typer.echo(msg, err=True)) as client:
        yield client
