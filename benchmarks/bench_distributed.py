"""`python -m benchmarks.bench_distributed`: training throughput of DimeRec under torchrun with 1 and 2 (or
more) processes, written to the "distributed_training" key of results/bench.json (other keys are kept).

Each measurement is `torchrun --standalone --nproc_per_node N -m dimerec train --model dimerec --dataset
planted --max-steps S` (global batch 256, so N processes take 256 / N samples each a step); samples/s is
S x 256 / the run's training time (metrics.json's train_minutes: sampling and steps, validation
excluded). The median of `--repeats` runs. On a GPU machine `--device cuda` puts each rank on its own GPU
(NCCL). A benchmark, not a test: on a machine whose cores are shared the figures are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dimerec.runs import read_metrics

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def one_run(nproc: int, steps: int, device: str, threads: int, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "dimerec", "train", "--model", "dimerec", "--dataset", "planted", "--max-steps", str(steps),
           "--eval-every", str(steps), "--valid-max-rows", "200", "--final-max-rows", "200", "--no-read-test",
           "--device", device, "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = read_metrics(out)
    seconds = metrics["train_minutes"] * 60
    return {"steps": metrics["steps"], "train_s": seconds, "samples_per_s": metrics["steps"] * 256 / seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", default="1,2", help="process counts (default: 1,2)")
    p.add_argument("--steps", type=int, default=150, help="training steps a run (default: 150)")
    p.add_argument("--repeats", type=int, default=3, help="runs per process count (median; default 3)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU a rank)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process (default 1)")
    p.add_argument("--out", default="results/bench.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dimerec-bench-ddp-") as tmp:
        for n in map(int, args.processes.split(",")):
            runs = [one_run(n, args.steps, args.device, args.threads, Path(tmp) / f"n{n}-r{r}")
                    for r in range(args.repeats)]
            rate = float(np.median([r["samples_per_s"] for r in runs]))
            rows.append({"processes": n, "samples_per_s": rate, "runs": runs})
            print(f"{n} process(es): {rate:,.0f} samples/s (median of {len(runs)})")
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None},
              "model": "dimerec", "dataset": "planted", "global_batch_size": 256, "steps": args.steps,
              "device": args.device, "threads_per_process": args.threads, "results": rows}
    out = Path(args.out)
    bench = json.loads(out.read_text()) if out.exists() else {}
    bench["distributed_training" + ("_gpu" if args.device.startswith("cuda") else "")] = report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench, indent=2) + "\n")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
