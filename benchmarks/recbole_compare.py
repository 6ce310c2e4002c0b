"""Issue 20: our SASRec and GRU4Rec beside RecBole 1.2.1's, at equal settings, on ML-1M under leave-one-out.

Both libraries read the same ML-1M interactions (RecBole's atomic `ml-1m.inter`), split them by RecBole's
leave-one-out (each user's last item the test target, the second-to-last the validation target; our
`--protocol loo`), and train with the same settings: d 64, 2 blocks with 1 head and a 64-wide ReLU feed-forward
(SASRec), one 64-wide GRU layer without dropout (GRU4Rec), history length 70, batch 256, Adam at lr 0.001,
dropout 0.2 (SASRec), the full-softmax cross-entropy over every item (RecBole's `loss_type: CE`, our
`--loss-kind ce`), one thread each.

Measured, interleaved ours / RecBole, model by model:

- speed: training samples per second of the training loop alone (setup and evaluation excluded; the setup's
  seconds reported beside), over `--speed-steps` batches, `--rounds` times; medians and the ratio ours/RecBole;
- quality: one run each of `--steps` batches (`--steps 2000` = 512,000 samples), scored by full ranking on
  the test rows (every user's last item): HR@10, NDCG@10, HR@50.

What still differs (no flag of either library closes it): RecBole's Transformer block is post-norm (layer norm
after each residual), ours pre-norm as the official SASRec; the two draw their own random initialisations and
shuffles. Alike: an epoch visits every training prefix once in shuffled order (ours with `--sampling prefixes`,
RecBole's prefix augmentation), and both rank already-seen items. Beside them, speed only: ours with `--sampling
windows` (our default since sequence-level training), every position of a window a target, one pass a window.

RecBole is not a dependency of this project: it needs numpy < 2 and setuptools < 70, so it lives in its own
environment that borrows this one's torch:

    python -m venv --system-site-packages .venv-recbole
    .venv-recbole/bin/pip install "recbole==1.2.1" "numpy<2" "setuptools<70"
    python benchmarks/recbole_compare.py --recbole-python .venv-recbole/bin/python --data-dir ../shared/data

Writes results/recbole-compare.json and results/recbole-compare.md (no underscore: the app's "Paper vs ours"
page lists only NAME_DATASET tables). Not a test: nothing here is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dimerec, for `ours` (RecBole's worker runs this file and never imports it)
MODELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}  # ours -> RecBole's name
BATCH, MAX_LEN, LR, DIM = 256, 70, 0.001, 64


def our_flags(model: str) -> list[str]:
    common = ["--dim", str(DIM), "--loss-kind", "ce", "--lr", str(LR), "--batch-size", str(BATCH)]
    if model == "sasrec":
        return [*common, "--n-layers", "2", "--n-heads", "1", "--dropout", "0.2"]
    return [*common, "--n-layers", "1", "--dropout-embed", "0", "--dropout-hidden", "0"]


def recbole_settings(model: str) -> dict:
    common = {"embedding_size": DIM, "hidden_size": DIM, "loss_type": "CE", "train_neg_sample_args": None,
              "learning_rate": LR, "train_batch_size": BATCH, "MAX_ITEM_LIST_LENGTH": MAX_LEN}
    if model == "sasrec":
        return {**common, "n_layers": 2, "n_heads": 1, "inner_size": DIM, "hidden_act": "relu",
                "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}
    return {**common, "num_layers": 1, "dropout_prob": 0.0}


def with_row_order_as_time(data_dir: Path, scratch: Path) -> Path:
    """RecBole's sequential models need a time field; the shared ml-1m.inter has none (its rows are each user's
    items in order, which is the order our reader keeps). A copy with the row number as timestamp gives RecBole
    the same order. Returns the data folder to read."""
    source = data_dir / "ml-1m" / "ml-1m.inter"
    header = source.open().readline().rstrip("\n").split("\t")
    if any(field.startswith("timestamp:") for field in header):
        return data_dir
    (scratch / "ml-1m").mkdir(parents=True, exist_ok=True)
    with source.open() as rows, (scratch / "ml-1m" / "ml-1m.inter").open("w") as copy:
        copy.write("\t".join([*header, "timestamp:float"]) + "\n")
        for number, line in enumerate(rows.readlines()[1:]):
            copy.write(f"{line.rstrip()}\t{number}\n")
    return scratch


# ----- the RecBole side: runs in RecBole's own environment ------------------------------------------------

def recbole_worker(model: str, steps: int, data_dir: str, seed: int, score: bool) -> dict:
    import itertools

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    torch.set_num_threads(1)
    started = time.perf_counter()
    checkpoints = tempfile.mkdtemp()
    data_dir = with_row_order_as_time(Path(data_dir), Path(checkpoints))
    config = Config(model=MODELS[model], dataset="ml-1m", config_dict={
        **recbole_settings(model), "data_path": str(Path(data_dir)), "seed": seed, "reproducibility": True,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)", "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                                                             "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [10, 50], "valid_metric": "Hit@50", "device": "cpu", "use_gpu": False,
        "worker": 0, "show_progress": False, "state": "ERROR", "checkpoint_dir": checkpoints,
        "eval_batch_size": 4096})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train.dataset)
    trainer = Trainer(config, net)
    setup = time.perf_counter() - started

    class FirstBatches:  # the trainer's epoch loop over only the batches this budget has left
        def __init__(self, loader, n):
            self.loader, self.n = loader, n

        def __iter__(self):
            return itertools.islice(iter(self.loader), self.n)

        def __len__(self):
            return self.n

        def __getattr__(self, name):
            return getattr(self.loader, name)

    done, epoch, train_seconds = 0, 0, 0.0
    while done < steps:
        n = min(steps - done, len(train))
        tick = time.perf_counter()
        trainer._train_epoch(FirstBatches(train, n), epoch)
        train_seconds += time.perf_counter() - tick
        done, epoch = done + n, epoch + 1
    out = {"library": "RecBole 1.2.1", "model": model, "steps": done, "samples_per_s": done * BATCH / train_seconds,
           "setup_s": setup, "n_users": dataset.user_num - 1, "n_items": dataset.item_num - 1}
    if score:
        result = trainer.evaluate(test, load_best_model=False)
        out.update({"HR@10": result["hit@10"], "NDCG@10": result["ndcg@10"], "HR@50": result["hit@50"],
                    "test rows": len(test.dataset.inter_feat)})
    return out


# ----- our side --------------------------------------------------------------------------------------------

def ours(model: str, steps: int, data_dir: str, seed: int, score: bool, sampling: str = "prefixes") -> dict:
    """Our run of `steps` batches; `prefixes` is RecBole's own sampling (prefix augmentation, one target a pass),
    `windows` ours (every position of a window a target, one pass a window; a batch still holds about 256 targets).
    samples_per_s counts training targets either way."""
    from dimerec.runs import read_metrics  # not at the top: RecBole's environment lacks dimerec's dependencies

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "dimerec", "train", "--model", model, "--dataset", "ml-1m", "--data-dir",
                data_dir, "--protocol", "loo", "--seed", str(seed), "--max-steps", str(steps), "--eval-every",
                str(10 * steps + 1), "--out", out, "--quiet", "--sampling", sampling, *our_flags(model)]
        if not score:
            argv += ["--final-max-rows", "1", "--no-read-test"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(argv, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        metrics = read_metrics(Path(out))
    wall = time.perf_counter() - started
    train_seconds = 60 * metrics["train_minutes"]
    targets = metrics["epochs_trained"] * metrics["targets_per_epoch"]  # what the steps trained, windows or not
    result = {"library": "DimeRec Explorer", "model": model, "sampling": sampling, "steps": metrics["steps"],
              "samples_per_s": targets / train_seconds, "setup_and_scoring_s": wall - train_seconds}
    if score:
        result.update({key: metrics["test"][key] for key in ("HR@10", "NDCG@10", "HR@50")})
    return result


def recbole(python: str, model: str, steps: int, data_dir: str, seed: int, score: bool) -> dict:
    argv = [python, str(Path(__file__).resolve()), "--worker", model, "--steps", str(steps),
            "--data-dir", str(Path(data_dir).resolve()), "--seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    with tempfile.TemporaryDirectory() as scratch:  # RecBole writes its logs (log/, log_tensorboard/) to the cwd
        done = subprocess.run(argv + (["--score"] if score else []), check=True, capture_output=True, text=True,
                              env=env, cwd=scratch)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Our SASRec and GRU4Rec beside RecBole 1.2.1 (ML-1M, leave-one-out, equal settings)", "",
             f"Command: `{report['command']}`", "", report["settings"], "", report["differences"], "",
             "| model | ours samples/s | RecBole samples/s | ratio | ours, windows, targets/s | ratio | ours HR@10 | "
             "RecBole HR@10 | ours NDCG@10 | RecBole NDCG@10 | ours HR@50 | RecBole HR@50 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, row in report["models"].items():
        q = row.get("quality", {})
        cells = [f"{row['ours_samples_per_s']:.0f}", f"{row['recbole_samples_per_s']:.0f}",
                 f"{row['speed_ratio']:.2f}×"]
        cells += ([f"{row['ours_windows_samples_per_s']:.0f}", f"{row['windows_speed_ratio']:.2f}×"]
                  if "ours_windows_samples_per_s" in row else ["—", "—"])  # reports written before windows
        for key in ("HR@10", "NDCG@10", "HR@50"):
            cells += [f"{100 * q[side][key]:.2f}" if side in q else "—" for side in ("ours", "recbole")]
        lines.append(f"| {MODELS[model]} | " + " | ".join(cells) + " |")
    lines += ["", "Speed: medians over the interleaved rounds of `--speed-steps` batches, training loop only, one "
              f"thread each; load average while measuring {report['load_average']}. Quality in %, full ranking, "
              "test rows.", ""]
    for model, row in report["models"].items():
        ratios = [a / b for a, b in zip(row["rounds"]["ours"], row["rounds"]["recbole"])]
        line = (f"- {MODELS[model]}: ours/RecBole per round " + ", ".join(f"{r:.2f}×" for r in ratios))
        if "quality" in row:  # the long runs, one after the other (not interleaved: the load may differ)
            q = row["quality"]
            line += (f"; over the {q['ours']['steps']}-batch quality runs (one after the other, not interleaved) "
                     f"ours {q['ours']['samples_per_s']:.0f} and RecBole {q['recbole']['samples_per_s']:.0f} "
                     f"samples/s ({q['ours']['samples_per_s'] / q['recbole']['samples_per_s']:.2f}×)")
        lines.append(line + ".")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recbole-python", help="python of the environment holding RecBole 1.2.1")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--models", default="sasrec,gru4rec")
    parser.add_argument("--steps", type=int, default=2000, help="batches of the quality run (2000: 512,000 samples)")
    parser.add_argument("--speed-steps", type=int, default=200, help="batches of each speed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality-models", default=None,
                        help="models that also get the quality run (default: every one of --models; '' for none)")
    parser.add_argument("--out", default=str(ROOT / "results" / "recbole-compare"))
    parser.add_argument("--worker", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # inside RecBole's environment
        print(json.dumps(recbole_worker(args.worker, args.steps, args.data_dir, args.seed, args.score)))
        return 0
    if not args.recbole_python:
        parser.error("--recbole-python is required: the python of an environment with RecBole 1.2.1 (see --help)")
    models = [m for m in args.models.split(",") if m]
    scored = models if args.quality_models is None else [m for m in args.quality_models.split(",") if m]
    for m in {*models, *scored}:
        if m not in MODELS:
            parser.error(f"--models: {m!r} is not one of {', '.join(MODELS)}")
    report = {"command": "python benchmarks/recbole_compare.py " + " ".join(sys.argv[1:]),
              "settings": __doc__.split("\n\n")[1].replace("\n", " "),
              "differences": __doc__.split("\n\n")[4].replace("\n", " "), "models": {}}
    loads = []
    for model in models:
        speeds = {"ours": [], "recbole": [], "ours_windows": []}
        for _ in range(args.rounds):  # interleaved, so all three see the same load
            speeds["ours"].append(ours(model, args.speed_steps, args.data_dir, args.seed, False)["samples_per_s"])
            speeds["recbole"].append(recbole(args.recbole_python, model, args.speed_steps, args.data_dir, args.seed,
                                             False)["samples_per_s"])
            speeds["ours_windows"].append(ours(model, args.speed_steps, args.data_dir, args.seed, False,
                                               "windows")["samples_per_s"])
            loads.append(os.getloadavg()[0])
        row = {"ours_samples_per_s": statistics.median(speeds["ours"]),
               "recbole_samples_per_s": statistics.median(speeds["recbole"]),
               "ours_windows_samples_per_s": statistics.median(speeds["ours_windows"]), "rounds": speeds}
        row["speed_ratio"] = row["ours_samples_per_s"] / row["recbole_samples_per_s"]
        row["windows_speed_ratio"] = row["ours_windows_samples_per_s"] / row["recbole_samples_per_s"]
        if model in scored:
            row["quality"] = {"ours": ours(model, args.steps, args.data_dir, args.seed, True),
                              "recbole": recbole(args.recbole_python, model, args.steps, args.data_dir, args.seed,
                                                 True)}
        report["models"][model] = row
        print(json.dumps({model: row}), flush=True)
    report["load_average"] = f"{min(loads):.1f}–{max(loads):.1f}"
    write_report(report, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
