"""Sample efficiency: mapped accuracy and top-1 agreement against the number of fitting images.

For a pair of networks in a store (a ``train`` fitting pool, whose rows may be several
augmented views per image, and a labelled ``val`` split) it fits maps on the first N
distinct pool images (a seeded random order; all views of each) for growing N, with
plain least squares, ridge chosen by 5-fold CV over images, a reduced-rank map (ridge-CV
then rank k) and the paper's Adam (fixed iteration budget), and scores each on ``val`` with
the target network's frozen head. Nothing is tuned on ``val``.

    python bench/curve.py STORE A B A.head.onnx B.head.onnx [--sizes 50 100 200 400 800 all]
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np

from lintwin import AdamOptions, FeatureStore, RankWarning, fit
from lintwin.api import accumulate_folds_arrays, maps_from_moments
from lintwin.core.moments import Moments
from lintwin.experiments.report import format_table
from lintwin.networks.onnx_models import Head
from lintwin.solvers import ridge_cv

METHODS = ("lstsq", "ridge-cv", "rank", "adam")


def fit_method(method: str, a: np.ndarray, b: np.ndarray, ids: np.ndarray, names: tuple[str, str], rank: int,
               adam_iterations: int) -> list:
    if method == "lstsq":
        return list(fit(a, b, both=True, names=names))
    if method == "adam":
        return list(fit(a, b, both=True, names=names, method="adam",
                        adam=AdamOptions(iterations=adam_iterations, batch=min(2048, len(a)))))
    folds = accumulate_folds_arrays(a, b, ids, k=5, names=names)
    lams = [ridge_cv(folds, reverse=r).chosen for r in (False, True)]
    return maps_from_moments(Moments.merged(folds), ridge=lams, both=True,
                             rank=rank if method == "rank" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("head_a", type=Path)
    ap.add_argument("head_b", type=Path)
    ap.add_argument("--sizes", nargs="+", default=["50", "100", "200", "400", "800", "all"])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--ranks", type=int, nargs="*", default=[],
                    help="also: accuracy against map rank (ridge-CV then rank k) on all pool images")
    ap.add_argument("--adam-iterations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/curve"))
    ap.add_argument("--title", default="")
    args = ap.parse_args()

    s = FeatureStore.open(args.store)
    a_all, b_all = s.features("train", args.a)[:], s.features("train", args.b)[:]
    ids = s.ids("train")
    ids = np.array([str(i) for i in range(len(a_all))]) if ids is None else ids
    keys = np.array([re.sub(r"#v\d+$", "", i) for i in ids])
    images, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng(args.seed).permutation(len(images))
    rank_of_image = np.empty(len(images), np.int64)
    rank_of_image[order] = np.arange(len(images))
    row_rank = rank_of_image[inverse]
    a_val, b_val = s.features("val", args.a)[:], s.features("val", args.b)[:]
    labels = s.labels("val")
    heads = {args.a: Head(args.head_a), args.b: Head(args.head_b)}
    own = {n: heads[n].predict(x) for n, x in ((args.a, a_val), (args.b, b_val))}
    val = {args.a: a_val, args.b: b_val}
    sizes = [len(images) if x == "all" else int(x) for x in args.sizes]
    sizes = sorted({min(n, len(images)) for n in sizes})
    rows, records = [], []
    for n_img in sizes:
        sel = row_rank < n_img
        for method in args.methods:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RankWarning)
                maps = fit_method(method, a_all[sel], b_all[sel], ids[sel], (args.a, args.b), args.rank,
                                  args.adam_iterations)
            secs = time.perf_counter() - t0
            for m in maps:
                pred = heads[m.dst].predict(np.asarray(m.apply(val[m.src]), np.float32))
                acc = float((pred == labels).mean())
                agree = float((pred == own[m.dst]).mean())
                own_acc = float((own[m.dst] == labels).mean())
                rec = {"images": n_img, "rows": int(sel.sum()), "method": method, "map": m.name,
                       "accuracy": acc, "agreement": agree, "loss_pp": 100 * (own_acc - acc), "seconds": secs,
                       "ridge": m.options.get("ridge")}
                records.append(rec)
                rows.append((n_img, rec["rows"], method, m.name, f"{100 * acc:.2f}", f"{100 * agree:.2f}",
                             f"{rec['loss_pp']:+.2f}", f"{secs:.1f}"))
            print(f"{n_img} images, {method}: done in {secs:.1f} s", flush=True)
    rank_rows = []
    if args.ranks:
        sel = row_rank < len(images)
        folds = accumulate_folds_arrays(a_all[sel], b_all[sel], ids[sel], k=5, names=(args.a, args.b))
        lams = [ridge_cv(folds, reverse=r).chosen for r in (False, True)]
        total = Moments.merged(folds)
        for k in args.ranks + [None]:
            for m in maps_from_moments(total, ridge=lams, both=True, rank=k):
                pred = heads[m.dst].predict(np.asarray(m.apply(val[m.src]), np.float32))
                acc, agree = float((pred == labels).mean()), float((pred == own[m.dst]).mean())
                records.append({"images": len(images), "rows": int(sel.sum()), "method": f"rank {k or 'full'}",
                                "map": m.name, "accuracy": acc, "agreement": agree, "rank": k or min(m.weight.shape)})
                rank_rows.append((k or "full", m.name, f"{100 * acc:.2f}", f"{100 * agree:.2f}"))
    own_text = ", ".join(f"{n} {100 * float((own[n] == labels).mean()):.2f}%" for n in (args.a, args.b))
    text = (f"{args.title or args.store}: own accuracy on val ({len(labels)} images): {own_text}\n" +
            format_table(["images", "rows", "method", "map", "acc %", "agree %", "loss pp", "s"], rows))
    if rank_rows:
        text += "\n\nAccuracy against map rank (ridge-CV λ, all pool images):\n" + format_table(
            ["rank", "map", "acc %", "agree %"], rank_rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps(records, indent=2))
    (args.out / "curve.txt").write_text(text + "\n")
    plot(records, args.out / "curve.png", args.title or str(args.store))


def plot(records: list[dict], path: Path, title: str) -> None:
    from lintwin.experiments.report import new_figure, save_figure

    maps = sorted({r["map"] for r in records})
    fig, axes = new_figure(1, len(maps), figsize=(6.5 * len(maps), 4.5))
    for ax, name in zip(axes[0], maps):
        for method in METHODS:
            pts = [(r["images"], 100 * r["accuracy"]) for r in records if r["map"] == name and r["method"] == method
                   and "rank" not in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("distinct fitting images")
        ax.set_ylabel("mapped top-1 accuracy on val (%)")
        ax.set_title(name)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)
    ranked = [r for r in records if "rank" in r]
    if ranked:
        fig, axes = new_figure(figsize=(6.5, 4.5))
        ax = axes[0, 0]
        for name in maps:
            pts = sorted((r["rank"], 100 * r["accuracy"]) for r in ranked if r["map"] == name)
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("map rank")
        ax.set_ylabel("mapped top-1 accuracy on val (%)")
        ax.set_title(f"{title}: accuracy against rank")
        ax.legend()
        save_figure(fig, path.with_name(path.stem + "_rank.png"))


if __name__ == "__main__":
    main()
