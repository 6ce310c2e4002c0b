"""Training throughput and quality per epoch, `prefixes` against `windows` (issue: sequence-level training).

Writes the key "training_by_sampling" of results/bench.json:

- throughput: training targets per second of full steps (forward, losses, backward, Adam) for every trainable model on
  ML-1M (its real batches; batch 256 targets), prefixes and windows interleaved in one process, the median of
  --rounds rounds, and the epoch time each implies (the training targets of ML-1M's 8:1:1 split / targets per second);
- quality: validation HR@50 after 1 and 3 epochs, windows against prefixes, from real training runs (`train_model`,
  default settings), --quality-seeds seeds on planted and 1 on ML-1M (5,000 validation rows). The runs are kept
  under --runs and reused, so an interrupted benchmark resumes where it stopped.

    python benchmarks/train_throughput.py                      # everything (hours on 2 cores: ML-1M prefixes)
    python benchmarks/train_throughput.py --skip-quality       # throughput only (minutes)
    python benchmarks/train_throughput.py --quality-datasets planted
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dimerec.data import TrainSampler, load_dataset  # noqa: E402
from dimerec.models import MODELS  # noqa: E402
from dimerec.models.base import Batch  # noqa: E402
from dimerec.runs import read_metrics, read_valid  # noqa: E402
from dimerec.trainer import build_model, train_model  # noqa: E402

SAMPLINGS = ("prefixes", "windows")
QUALITY_MODELS = ("sasrec", "comirec-sa", "dimerec-nodiff", "dimerec")  # the speed targets


def trainable_models() -> list[str]:
    return [name for name, cls in MODELS.items() if cls.trainable]


def timed_steps(model, optimizer, batches, pad_id: int) -> tuple[float, int]:
    """(seconds, targets) of full training steps over `batches`."""
    targets, start = 0, time.perf_counter()
    for hist, target in batches:
        batch = Batch(torch.from_numpy(hist), torch.from_numpy(target), pad_id)
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        targets += int((batch.target != pad_id).sum())
    return time.perf_counter() - start, targets


def throughput(data, models: list[str], rounds: int, steps: int, seed: int) -> dict:
    """Targets/s per model and sampling. The two samplings of a model alternate step by step (a prefixes step, then a
    windows step, ...), `steps` of each per round, so that a change of machine load falls on both alike; a sampling's
    figure is the median of its per-step rates over every round."""
    train_users = data.split(0).train
    out = {}
    for name in models:
        samplings = [s for s in SAMPLINGS if s == "prefixes" or MODELS[name].takes_windows]
        setups = {}
        for sampling in samplings:
            model = build_model(name, data, seed=seed)
            model.fit_statistics(data, train_users)
            model.train()
            sampler = TrainSampler(data, train_users, 256, sampling, seed=seed)
            epoch = sampler.epoch()
            batches = [next(epoch) for _ in range(steps + 2)]
            optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
            timed_steps(model, optimizer, batches[:2], data.pad_id)  # warm-up
            setups[sampling] = (model, optimizer, batches[2:], sampler.targets_per_epoch)
        rates: dict[str, list[float]] = {s: [] for s in samplings}
        for _ in range(rounds):
            for i in range(steps):
                for sampling, (model, optimizer, batches, _) in setups.items():
                    seconds, targets = timed_steps(model, optimizer, batches[i:i + 1], data.pad_id)
                    rates[sampling].append(targets / seconds)
        row = {}
        for sampling in SAMPLINGS:
            if sampling not in rates:
                row[sampling] = None
                continue
            median = float(np.median(rates[sampling]))
            row[sampling] = {"targets_per_s": round(median, 1), "steps_timed": len(rates[sampling]),
                             "epoch_minutes": round(setups[sampling][3] / median / 60, 2)}
        if row["windows"]:
            row["speedup"] = round(row["windows"]["targets_per_s"] / row["prefixes"]["targets_per_s"], 2)
        out[name] = row
        print(f"{name}: {row}", flush=True)
    return out


def valid_by_epoch(run: Path) -> dict[int, float]:
    valid = read_valid(run, required=True)
    return dict(zip(valid["epoch"].astype(int), valid["HR@50"].astype(float)))


def quality(datasets: list[str], models: list[str], seeds: int, runs: Path, data_dir: str | None,
            tabulate_only: bool = False) -> list[dict]:
    """Validation HR@50 after epochs 1 and 3 of real training runs, windows and prefixes; finished runs reused
    (`tabulate_only`: only those, the others left out of the table until they are trained)."""
    rows = []
    for dataset in datasets:
        data = load_dataset(dataset, data_dir)
        for name in models:
            for seed in range(seeds if dataset == "planted" else 1):
                for sampling in SAMPLINGS:
                    run = runs / dataset / name / sampling / f"seed{seed}"
                    if not (run / "metrics.json").exists() and tabulate_only:
                        continue
                    if not (run / "metrics.json").exists():
                        print(f"training {dataset} {name} {sampling} seed {seed}", flush=True)
                        train_model(name, data, out=run, seed=seed, sampling=sampling, max_epochs=3, patience=10,
                                    valid_max_rows=5000, final_max_rows=5000, read_test=False, progress=False,
                                    checkpoint_every=200, resume=(run / "last.pt").exists())
                    hr = valid_by_epoch(run)
                    minutes = read_metrics(run)["train_minutes"]
                    rows.append({"dataset": dataset, "model": name, "seed": seed, "sampling": sampling,
                                 "valid_HR@50_epoch1": round(100 * hr[1], 2),
                                 "valid_HR@50_epoch3": round(100 * hr[3], 2),
                                 "train_minutes_3_epochs": minutes})
    return rows


def write_markdown(section: dict, path: Path) -> None:
    """results/training-throughput.md: the tables of `section` (no underscore in the name: the app's "Paper vs ours"
    page lists only NAME_DATASET tables)."""
    m = section["machine"]
    t = section["throughput"]
    lines = ["# Training throughput and quality per epoch: prefixes against windows", "",
             f"Command: `python benchmarks/train_throughput.py` (writes `results/bench.json`, key "
             f"`training_by_sampling`). Machine: {m.get('cpu_cores')} CPU cores, {m['platform']}, "
             f"torch {m['torch']}.", "",
             f"Throughput on {t['data']} (its real training batches, {t['batch_targets']} targets a batch): training "
             f"targets per second of whole steps (forward, losses, backward, Adam), the two samplings of a model "
             f"alternating step by step in one process, the median of "
             f"{next(iter(t['models'].values()))['prefixes']['steps_timed']} steps each; the epoch time each "
             f"implies.", "",
             "Load averages (1, 5, 15 min) before and after are given under each table: on a loaded machine many "
             "threads wait for each other, which hurts windows' many small operations more than prefixes' few large "
             "ones, so the 1-thread figures are given beside the 2-thread ones."]
    for key, title in (("throughput", "2 threads"), ("throughput_1_threads", "1 thread")):
        if key not in section:
            continue
        t = section[key]
        lines += ["", f"### {title}", "",
                  "| model | prefixes targets/s | windows targets/s | speed-up | epoch min, prefixes | "
                  "epoch min, windows |", "|---|---|---|---|---|---|"]
        for name, row in t["models"].items():
            p, w = row["prefixes"], row["windows"]
            lines.append(f"| {name} | {p['targets_per_s']:.0f} | {w['targets_per_s']:.0f} | {row['speedup']:.1f}× | "
                         f"{p['epoch_minutes']:.1f} | {w['epoch_minutes']:.1f} |" if w else
                         f"| {name} | {p['targets_per_s']:.0f} | — (keeps prefixes) | — | {p['epoch_minutes']:.1f} | "
                         f"— |")
        if "load_average" in t:
            lines += ["", "Load average before and after: " + ", ".join(f"{x:.1f}" for x in t["load_average"])]
    quality_rows = section.get("quality_per_epoch")
    if quality_rows:
        import pandas as pd

        q = pd.DataFrame(quality_rows)
        lines += ["", "Quality per epoch: validation HR@50 (%, 5,000 rows) after epochs 1 and 3 of real training runs, "
                      "each model at its default settings once with `--sampling prefixes` and once with `--sampling "
                      "windows` (the default `--window-targets`, half of max_len), mean over seeds (planted: 3 seeds; "
                      "ML-1M: 1), and the minutes 3 epochs took (1 thread, a shared machine).", "",
                  "| dataset | model | seeds | prefixes ep. 1 | windows ep. 1 | prefixes ep. 3 | windows ep. 3 | "
                  "prefixes min | windows min |", "|---|---|---|---|---|---|---|---|---|"]
        for (dataset, name), group in q.groupby(["dataset", "model"], sort=False):
            by = group.groupby("sampling")
            mean = by[["valid_HR@50_epoch1", "valid_HR@50_epoch3", "train_minutes_3_epochs"]].mean()
            if not {"prefixes", "windows"} <= set(mean.index):
                continue
            cells = [f"{mean.loc[s, 'valid_HR@50_epoch1']:.2f}" for s in SAMPLINGS]
            cells += [f"{mean.loc[s, 'valid_HR@50_epoch3']:.2f}" for s in SAMPLINGS]
            cells += [f"{mean.loc[s, 'train_minutes_3_epochs']:.1f}" for s in SAMPLINGS]
            lines.append(f"| {dataset} | {name} | {by.size().min()} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="holding ml-1m/ (default: $DIMEREC_DATA, else ./data)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per model, sampling and round")
    p.add_argument("--models", default=",".join(trainable_models()))
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--quality-only", action="store_true", help="keep the throughput figures already in --out")
    p.add_argument("--tabulate-only", action="store_true",
                   help="quality from the finished runs under --runs only; train nothing")
    p.add_argument("--quality-datasets", default="planted,ml-1m")
    p.add_argument("--quality-models", default=",".join(QUALITY_MODELS))
    p.add_argument("--quality-seeds", type=int, default=3, help="seeds on planted (ML-1M: 1)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench-sampling"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from --out's figures, measure nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.markdown_only:
        write_markdown(results["training_by_sampling"], out.parent / "training-throughput.md")
        return
    section = results.get("training_by_sampling", {})
    section["machine"] = {"cpu_cores": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__}
    key = "throughput" if args.threads == 2 else f"throughput_{args.threads}_threads"  # the figure: 2
    if not args.quality_only:
        data = load_dataset("ml-1m", args.data_dir)
        section[key] = {"data": "ml-1m", "batch_targets": 256, "steps_per_round": args.steps,
                        "load_average": list(os.getloadavg()),
                        "models": throughput(data, args.models.split(","), args.rounds, args.steps, args.seed)}
        section[key]["load_average"] += list(os.getloadavg())  # before and after
        results["training_by_sampling"] = section
        out.write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(section, out.parent / "training-throughput.md")
        print(json.dumps(section[key]["models"], indent=1))
    if not args.skip_quality:
        section["quality_per_epoch"] = quality(args.quality_datasets.split(","), args.quality_models.split(","),
                                               args.quality_seeds, Path(args.runs), args.data_dir,
                                               args.tabulate_only)
        out.write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(section, out.parent / "training-throughput.md")


if __name__ == "__main__":
    main()
