"""Issue 18, bug 1: how much the autograd graph that evaluation used to build cost.

Times one ML-1M validation pass (`dimerec.evaluate.evaluate`, full ranking, next-item) of SASRec and
DiffuRec, freshly initialised under seed 0 (scoring cost does not depend on the weights), with the code of
two commits: BEFORE (evaluation built an autograd graph) and the working tree (no_grad in `serving`). The
two run in separate processes, interleaved, `--repeats` times each; the medians and the peak resident memory
go to results/bench.json under "evaluation_no_grad".

    python benchmarks/evaluation_grad.py --before 85b45d0 --data-dir ../shared/data
    python benchmarks/evaluation_grad.py --in-process --data-dir ../shared/data

`--in-process` times the part of evaluation the fix changes, in one process and interleaved batch by batch:
the user vectors and top-50 retrieval of the same 20,000 ML-1M validation rows with autograd recording (the
bug) and without (the fix), `--repeats` passes each; written under "evaluation_no_grad_in_process". Less
exposed to a busy machine than separate processes minutes apart.
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


def in_process(data_dir: str, repeats: int, rows: int = 20000) -> dict:
    import torch

    from dimerec.data import load_dataset
    from dimerec.evaluate import build_rows, row_order
    from dimerec.retrieval import TorchRetriever
    from dimerec.trainer import build_model

    torch.set_num_threads(1)
    data = load_dataset("ml-1m", data_dir)
    out = {}
    for name in ("sasrec", "diffurec"):
        model = build_model(name, data, seed=0).eval()
        n = rows if name == "sasrec" else rows // 10  # DiffuRec: 32 Transformer passes a row
        eval_rows = build_rows(data, data.split(0).valid, "next-item")
        order = row_order(len(eval_rows.hist), n, 0)
        retriever = TorchRetriever()
        retriever.index(model.item_vectors())
        timings = {"grad": [], "no_grad": []}
        for _ in range(repeats):
            for label, mode in (("grad", torch.enable_grad), ("no_grad", torch.no_grad)):
                torch.manual_seed(0)
                start = time.perf_counter()
                with mode():
                    for at in range(0, len(order), 1024):
                        hist = torch.from_numpy(eval_rows.hist[order[at:at + 1024]])
                        retriever.search(model.user_vectors(hist), 50)
                timings[label].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in timings.items()}
        out[name] = {"rows": int(len(order)), "median_seconds": {k: round(v, 2) for k, v in med.items()},
                     "all_seconds": {k: [round(x, 2) for x in v] for k, v in timings.items()},
                     "speedup": round(med["grad"] / med["no_grad"], 2)}
        print(name, out[name], flush=True)
    return {"threads": 1, "repeats": repeats, "models": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the commit whose evaluation built gradients")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=json.loads, default={"sasrec": None, "diffurec": 2000},
                        help='rows per model, JSON (null: the whole validation split)')
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", help="see the module docstring")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.in_process:
        result = in_process(args.data_dir, args.repeats)
        bench_path = ROOT / "results" / "bench.json"
        bench = json.loads(bench_path.read_text())
        bench["evaluation_no_grad_in_process"] = result
        bench_path.write_text(json.dumps(bench, indent=2) + "\n")
        return
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
