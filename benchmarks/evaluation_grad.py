"""Issue 18, bug 1: how much the autograd graph that evaluation used to build cost.

Times one ML-1M validation pass (`dimerec.evaluate.evaluate`, full ranking, next-item) of SASRec and
DiffuRec, freshly initialised under seed 0 (scoring cost does not depend on the weights), with the code of
two commits: BEFORE (evaluation built an autograd graph) and the working tree (no_grad in `serving`). The
two run in separate processes, interleaved, `--repeats` times each; the medians and the peak resident memory
go to results/bench.json under "evaluation_no_grad".

    python benchmarks/evaluation_grad.py --before 85b45d0 --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_pass(model_name: str, data_dir: str, rows: int | None) -> dict:
    """Time one validation pass in this process (the dimerec on sys.path is the one measured)."""
    import torch

    from dimerec.data import load_dataset
    from dimerec.evaluate import evaluate
    from dimerec.trainer import build_model

    torch.set_num_threads(1)
    data = load_dataset("ml-1m", data_dir)
    model = build_model(model_name, data, seed=0)
    valid = data.split(0).valid
    start = time.perf_counter()
    metrics = evaluate(model, data, valid, max_rows=rows)["final"]
    return {"seconds": time.perf_counter() - start, "HR@50": metrics["HR@50"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the commit whose evaluation built gradients")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=json.loads, default={"sasrec": None, "diffurec": 2000},
                        help='rows per model, JSON (null: the whole validation split)')
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.one:
        rows = None if args.one[1] == "all" else int(args.one[1])
        print(json.dumps(one_pass(args.one[0], args.data_dir, rows)))
        return
    with tempfile.TemporaryDirectory() as old:
        subprocess.run(f"git -C {ROOT} archive {args.before} dimerec | tar -x -C {old}", shell=True, check=True)
        trees = {"before": old, "after": str(ROOT)}
        runs: dict = {}
        for model, rows in args.rows.items():
            for _ in range(args.repeats):
                for label, tree in trees.items():  # interleaved: before, after, before, after, ...
                    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
                    out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--one", model,
                                          "all" if rows is None else str(rows)], env=env, check=True,
                                         capture_output=True, text=True, cwd=tree).stdout
                    runs.setdefault(model, {}).setdefault(label, []).append(json.loads(out.splitlines()[-1]))
                    print(model, label, runs[model][label][-1], flush=True)
    result = {"before_commit": args.before, "threads": 1, "repeats": args.repeats, "models": {}}
    for model, by_label in runs.items():
        med = {label: statistics.median(r["seconds"] for r in rs) for label, rs in by_label.items()}
        result["models"][model] = {
            "rows": args.rows[model] or "all", "median_seconds": {k: round(v, 2) for k, v in med.items()},
            "speedup": round(med["before"] / med["after"], 2),
            "peak_rss_mb": {k: round(max(r["peak_rss_mb"] for r in rs)) for k, rs in by_label.items()},
            "same_metrics": len({r["HR@50"] for rs in by_label.values() for r in rs}) == 1}
    bench_path = ROOT / "results" / "bench.json"
    bench = json.loads(bench_path.read_text())
    bench["evaluation_no_grad"] = result
    bench_path.write_text(json.dumps(bench, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
