"""Training throughput and serving latency of DimeRec, written to results/bench.json:

    python -m benchmarks.dimerec_bench --data-dir ../shared/data        # from the repository root

Training: samples per second of full training steps (forward, three losses, backward,
Adam) at batch 256 with ML-1M's shapes (history length 70, 3,706 items) — on the real
ML-1M when it is in the data directory, else on random histories of the same shape.
Serving: one user's history to its top-50 items — GEM, T reverse steps, retrieval —
timed per user at batch 1 and at batch 1,024.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dimerec.models.base import Batch
from dimerec.models.dimerec import DimeRec, DimeRecConfig
from dimerec.retrieval import FaissRetriever, TorchRetriever
from dimerec.trainer import seed_everything

ML1M_ITEMS, ML1M_LEN = 3706, 70


def synthetic_batches(n_items: int, max_len: int, batch: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        lengths = rng.integers(1, max_len + 1, size=batch)
        hist = rng.integers(0, n_items, size=(batch, max_len))
        hist[np.arange(max_len)[None, :] < (max_len - lengths)[:, None]] = n_items  # left padding
        yield hist, rng.integers(0, n_items, size=batch)


def training_batches(data_dir, batch: int, n: int, seed: int):
    from dimerec.data import TrainSampler, load_dataset
    from dimerec.errors import DataError

    try:
        data = load_dataset("ml-1m", data_dir)
    except DataError:  # no ML-1M here: same shapes, random ids
        return "random histories with ML-1M's shapes", synthetic_batches(ML1M_ITEMS, ML1M_LEN, batch, n, seed)
    sampler = TrainSampler(data, data.split(0).train, batch, seed=seed)
    epoch = sampler.epoch()
    return "ml-1m", (next(epoch) for _ in range(n))


def bench_training(config: DimeRecConfig, data_dir, steps: int, seed: int) -> dict:
    seed_everything(seed)  # as the trainer does, deterministic algorithms included
    model = DimeRec(ML1M_ITEMS, ML1M_LEN, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    source, batches = training_batches(data_dir, 256, steps + 5, seed)
    batches = [(torch.from_numpy(h), torch.from_numpy(t)) for h, t in batches]
    timings = []
    for i, (hist, target) in enumerate(batches):
        start = time.perf_counter()
        loss = model.loss(Batch(hist, target, ML1M_ITEMS))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 5:  # warm-up
            timings.append(time.perf_counter() - start)
    per_step = float(np.median(timings))
    return {"data": source, "batch_size": 256, "max_len": ML1M_LEN, "steps_timed": len(timings),
            "median_step_ms": per_step * 1000, "samples_per_s": 256 / per_step}


@torch.no_grad()
def bench_serving(config: DimeRecConfig, batch: int, repeats: int, retriever_name: str, seed: int) -> dict:
    torch.manual_seed(seed)
    model = DimeRec(ML1M_ITEMS, ML1M_LEN, config).eval()
    retriever = {"torch": TorchRetriever, "faiss": FaissRetriever}[retriever_name]()
    retriever.index(model.item_vectors())
    hist, _ = next(synthetic_batches(ML1M_ITEMS, ML1M_LEN, batch, 1, seed))
    hist = torch.from_numpy(hist)
    timings = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        retriever.search(model.user_vectors(hist), 50)
        if i >= 2:
            timings.append(time.perf_counter() - start)
    per_call = float(np.median(timings))
    return {"batch": batch, "retriever": retriever_name, "T": config.T, "serve_samples": 1,
            "ms_per_batch": per_call * 1000, "ms_per_user": per_call * 1000 / batch}


def run_bench(data_dir=None, out: Path = Path("results/bench.json"), steps: int = 30, seed: int = 0,
              preset: str = "ours") -> dict:
    config = DimeRecConfig(preset=preset)
    report = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "preset": preset,
        "training": bench_training(config, data_dir, steps, seed),
        "serving": [bench_serving(config, b, r, name, seed)
                    for b, r in ((1, 200), (1024, 5)) for name in ("torch", "faiss")],
        "targets": {"training_samples_per_s": 10000, "serving_ms_per_user_batch1": 10,
                    "serving_ms_per_user_batch1024": 1},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **report}, indent=2) + "\n")  # keeps other benchmarks' keys
    return report


def print_report(report: dict) -> None:
    t = report["training"]
    print(f"training ({t['data']}, batch {t['batch_size']}, length {t['max_len']}): "
          f"{t['samples_per_s']:,.0f} samples/s ({t['median_step_ms']:.1f} ms/step; target ≥ 10,000)")
    for s in report["serving"]:
        print(f"serving, batch {s['batch']:>5}, {s['retriever']:>5}: {s['ms_per_user']:.3f} ms/user "
              f"({s['ms_per_batch']:.1f} ms/batch; T = {s['T']})")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from dimerec.data import DATA_DIR_HELP
    from dimerec.errors import DimeRecError

    parser = argparse.ArgumentParser(description="DimeRec training throughput and serving latency -> bench.json")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps (default: 30)")
    parser.add_argument("--preset", choices=("ours", "paper"), default="ours")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.steps < 1:
            raise DimeRecError(f"--steps must be at least 1; got {args.steps}")
        report = run_bench(args.data_dir, Path(args.out), steps=args.steps, seed=args.seed, preset=args.preset)
    except DimeRecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
