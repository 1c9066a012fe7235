"""One ``lintwin study`` of N networks against N(N−1)/2 pairwise ``lintwin solve --both`` runs.

Both sides are whole ``lintwin`` processes on the same feature store, run one after another in
the same run: wall time (process start to exit) and peak resident memory (VmHWM of each
process). The study makes one pass over the fitting split for the joint moments of all N
networks, solves every ordered pair and scores all N(N−1) maps (plus the head-only maps) with
every head in one pass over the evaluation split; each ``solve --both`` run makes one pass for
its pair's moments, then reports feature metrics of its two maps on the fitting and held-out
splits (that is what the command does). The fit alone is compared too: the study's
accumulate + solve seconds against the sum of the ``fit time`` lines the solve runs print.

    python bench/bench_study.py --store runs/fashion6.zarr --models models/fashion \\
        --nets fmnist-resnet fmnist-inception fmnist-vgg fmnist-mobilenet fmnist-mlp fmnist-resnet-s1 --ns 3 6
    python bench/bench_study.py --quick       # synthetic networks, under a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM, MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(report: Path, argv: list[str]) -> None:
    """Run one lintwin command in this process, then record its exit code and peak memory."""
    from lintwin.cli import app

    code = 0
    try:
        app(argv, standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001  reported, not hidden: the parent refuses a failed run
        code = 1
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    report.write_text(json.dumps({"rc": code, "peak_rss_mb": peak_rss_mb()}))


def run(argv: list[str], work: Path) -> dict:
    """One whole lintwin process: wall seconds, peak RSS, stdout."""
    report = work / f"child_{time.monotonic_ns()}.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(report), "--", *argv], check=False,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    info = json.loads(report.read_text()) if report.is_file() else {"rc": proc.returncode, "peak_rss_mb": None}
    if proc.returncode or info["rc"]:
        raise SystemExit(f"lintwin {' '.join(argv[:2])} failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, "peak_rss_mb": info["peak_rss_mb"], "stdout": proc.stdout}


def bench_n(store: Path, nets: list[str], heads: list[str], work: Path, extra: list[str]) -> dict:
    out = work / f"study_{len(nets)}"
    study = run(["study", str(store), "--nets", *nets, "--heads", *heads, "--out", str(out), "-q", *extra], work)
    data = json.loads((out / "study.json").read_text())
    study["fit_seconds"] = data["timings"].get("accumulate_seconds", 0.0) + data["timings"]["solve_seconds"]
    study["eval_seconds"] = data["timings"]["eval_seconds"]
    study["median_loss"] = float(np.median([r["loss"] for r in data["pairs"]["fitted"]]))
    solves = []
    for a, b in itertools.combinations(nets, 2):
        r = run(["solve", str(store), "--src", a, "--dst", b, "--both", "--out", str(work / f"pair_{a}_{b}"), "-q",
                 *extra], work)
        m = re.search(r"fit time ([0-9.]+) s", r["stdout"])
        r["fit_seconds"] = float(m.group(1)) if m else float("nan")
        solves.append({"pair": [a, b], **{k: v for k, v in r.items() if k != "stdout"}})
    pair_wall = sum(s["wall"] for s in solves)
    pair_fit = sum(s["fit_seconds"] for s in solves)
    return {"n": len(nets), "nets": nets, "study": {k: v for k, v in study.items() if k != "stdout"},
            "pairwise": {"runs": len(solves), "wall": pair_wall, "fit_seconds": pair_fit,
                         "peak_rss_mb": max(s["peak_rss_mb"] for s in solves), "each": solves},
            "ratio_wall": pair_wall / study["wall"], "ratio_fit": pair_fit / study["fit_seconds"]}


def table(rows: list[dict], rows_train: int) -> str:
    head = (f"{'N':>2}  {'study s':>8}  {'study MB':>8}  {'solve runs':>10}  {'pairwise s':>10}  {'pairwise MB':>11}  "
            f"{'wall ratio':>10}  {'fit: study s':>12}  {'fit: pairs s':>12}  {'fit ratio':>9}")
    lines = [(f"{rows_train} fitting rows; whole processes, wall seconds and peak RSS (VmHWM, the largest of the "
             "pairwise runs); pairwise = sum over runs"), head, "-" * len(head)]
    for r in rows:
        s, p = r["study"], r["pairwise"]
        lines.append(f"{r['n']:>2}  {s['wall']:>8.2f}  {s['peak_rss_mb']:>8.0f}  {p['runs']:>10}  {p['wall']:>10.2f}  "
                     f"{p['peak_rss_mb']:>11.0f}  {r['ratio_wall']:>9.2f}x  {s['fit_seconds']:>12.2f}  "
                     f"{p['fit_seconds']:>12.2f}  {r['ratio_fit']:>8.2f}x")
    return "\n".join(lines)


def quick_store(work: Path) -> tuple[Path, list[str], list[str]]:
    """Three small synthetic networks with labels and real ONNX Gemm heads."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lintwin import FeatureStore

    rng = np.random.default_rng(0)
    path = work / "quick.zarr"
    store = FeatureStore.create(path)
    dims = {"A": 32, "B": 24, "C": 16}
    proj = {n: rng.standard_normal((8, d)) for n, d in dims.items()}
    heads = []
    for split, n in (("train", 4000), ("val", 1000)):
        z = rng.standard_normal((n, 8))
        for name, d in dims.items():
            f = np.maximum(z @ proj[name] + 0.3 * rng.standard_normal((n, d)), 0).astype(np.float32)
            arr = store.open_features_for_write(split, name, rows=n, dim=d, source="bench quick",
                                                rows_identity=f"quick {split}")
            FeatureStore.write_rows(arr, 0, f)
        if split == "val":
            store.set_labels(split, np.argmax(z[:, :4], axis=1))
    for name, d in dims.items():
        w = rng.standard_normal((4, d)).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["features", "W", "b"], ["logits"], transB=1)], "head",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
            initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(4, np.float32), "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(work / f"{name}.head.onnx"))
        heads.append(str(work / f"{name}.head.onnx"))
    return path, list(dims), heads


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path)
    ap.add_argument("--nets", nargs="+")
    ap.add_argument("--models", type=Path, help="folder with each network's NAME.json sidecar")
    ap.add_argument("--ns", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--tag", default="fashion")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
        work = Path(tmp)
        if args.quick:
            store, nets, heads = quick_store(work)
            args.ns, args.tag = [3], "quick"
        else:
            if not (args.store and args.nets and args.models):
                ap.error("--store, --nets and --models are needed (or --quick)")
            from lintwin.networks.onnx_models import NetworkSpec

            store, nets = args.store, args.nets
            heads = [str(NetworkSpec.for_model(args.models / f"{n}.json").head_path) for n in nets]
        from lintwin import FeatureStore

        rows_train = FeatureStore.open(store).rows("train")
        rows = []
        for n in args.ns:
            print(f"N = {n}: one study, then {n * (n - 1) // 2} solve --both runs", flush=True)
            rows.append(bench_n(store, nets[:n], heads[:n], work, ["--device", "cpu"]))
        text = table(rows, rows_train)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"study_{args.tag}.txt").write_text(text + "\n")
    (args.out / f"study_{args.tag}.json").write_text(json.dumps({"rows": rows, "train_rows": rows_train}, indent=1))
    print(f"wrote {args.out / f'study_{args.tag}.txt'}")


if __name__ == "__main__":
    main()
