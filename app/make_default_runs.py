"""Regenerate the app's built-in runs in app/default_runs/ (committed, a few MB).

    OMP_NUM_THREADS=1 python app/make_default_runs.py    # about 85 minutes on 2 shared CPU cores

Trains five models on the `planted` world with the command line, each to its validation plateau (at most
--max-epochs epochs, stopped after --patience epochs without a better validation HR@50, as `reproduce` trains),
and keeps only what the app reads (config.json, best.pt, losses.csv, valid.csv,
metrics.json and, for the models that denoise, step_metrics.json), then writes each run's
presets.json: the preset users the sidebar offers first, picked by sampling the chains of 400
users (dimerec.explore.chain_presets; up to a minute for the long chains, so once, here, not
when a class switches run), and item_map.npz: the Interests page's UMAP map of the items with every
held-out user's interests and chain guesses placed on it (UMAP compiles for a minute on first use):

- dimerec-planted         DimeRec, `--preset ours` (the default settings)
- dimerec-nogrw-planted   the same without the geodesic random walk (`--no-grw`), for the Training page
- dimerec-nodiff-planted  the no-diffusion control (`--model dimerec-nodiff`)
- dreamrec-planted        DreamRec: a Euclidean chain guided by one SASRec vector, for the Denoising and Steps pages
- diffurec-planted        DiffuRec: a Euclidean chain over the history's item vectors, likewise

`--only NAME ...` retrains only those runs (the others, and the numbers tests read from them, stay).
`--presets-only` trains nothing: it rewrites the presets.json and item_map.npz of the runs there (of `--only`'s
runs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP = ("config.json", "best.pt", "losses.csv", "valid.csv", "metrics.json", "step_metrics.json")  # and, for
# DimeRec, sample_or_mean.json (write_lesson)
if str(HERE.parent) not in sys.path:  # `python app/make_default_runs.py` puts app/ on the path, not the project
    sys.path.insert(0, str(HERE.parent))
PRESET_SAMPLES, PRESET_SEED = 6, 0  # the samples the pages show by default (app.runs.DEFAULT_SAMPLES, seed 0)
RUNS = {
    "dimerec-planted": ["--model", "dimerec"],
    "dimerec-nogrw-planted": ["--model", "dimerec", "--no-grw"],
    "dimerec-nodiff-planted": ["--model", "dimerec-nodiff"],
    # DreamRec at its official d = 64 and lr 0.005 peaks below popularity on planted (valid HR@50 18.5 at lr 0.001):
    # d = 128 at lr 0.001 is the smallest setting tried that clears it
    "dreamrec-planted": ["--model", "dreamrec", "--dim", "128", "--lr", "0.001"],
    "diffurec-planted": ["--model", "diffurec"],
}


def write_lesson(run: Path) -> None:
    """The run's sample_or_mean.json (the "Sample or mean?" page's numbers: explore.run_lesson), so that the page
    opens at once."""
    from dimerec.runs import LESSON_FILE, load_run, stored_lesson
    from dimerec.serving import serving_of

    model, data, config = load_run(run)
    (run / LESSON_FILE).unlink(missing_ok=True)  # computed afresh, whatever serving it was made for
    stored_lesson(run, model, data, config, serving_of(model, config["serving"]))
    print(f"wrote {run / LESSON_FILE}", flush=True)


def _load(run: Path):
    """The trained run: the model in eval mode, its dataset and its held-out users."""
    import torch

    from dimerec import explore
    from dimerec.runs import load_run

    torch.set_num_threads(1)
    model, data, config = load_run(run)
    model.eval()
    held_out = explore.held_out_users(data, data.split(int(config.get("train_config", {}).get("split_seed", 0))))
    return model, data, held_out


def write_presets(run: Path) -> list[tuple[int, str]]:
    """The run's preset users, chosen by what its chains do (dimerec.explore.chain_presets) on the samples the pages
    show, into its presets.json (dimerec.runs.write_presets, tied to this best.pt: the app ignores a stale file)."""
    from dimerec import explore
    from dimerec.runs import write_presets as write_presets_file

    model, data, held_out = _load(run)
    picks = explore.chain_presets(model, data, held_out, explore.item_categories(data)[1],
                                  n_samples=PRESET_SAMPLES, seed=PRESET_SEED)
    write_presets_file(run, picks, "preset users: held-out users worth opening first, each with the reason it was "
                                   f"picked (dimerec.explore.chain_presets on {PRESET_SAMPLES} reverse samples, seed "
                                   f"{PRESET_SEED}, among at most {explore.PRESET_POOL} held-out users)")
    return picks


def write_item_map(run: Path) -> int:
    """The Interests page's item map (dimerec.explore.fit_item_map) and, placed on it by UMAP's transform, every
    held-out user's interests and chain guesses (explore.map_vectors, the samples the pages show), into its
    item_map.npz (dimerec.runs.write_item_map; half precision: a few tens of kB). UMAP compiles on first use: a
    minute, here, once, rather than in front of a class. Returns the file's size in bytes."""
    import numpy as np

    from dimerec import explore
    from dimerec.runs import write_item_map as write_item_map_file

    model, data, held_out = _load(run)
    item_map = explore.fit_item_map(model.item_vectors().detach().numpy())
    interests, guesses = [], []
    for user in held_out.tolist():
        hist = explore.history_tensor(data, explore.user_history(data, user))
        g, x = explore.map_vectors(model, hist, PRESET_SAMPLES, PRESET_SEED)
        interests.append(g)
        guesses.append(x if x is not None else np.zeros((0, 0, g.shape[-1]), dtype=np.float32))
    interests, guesses = np.stack(interests), np.stack(guesses)
    placed_interests = item_map.place(interests)
    placed_guesses = item_map.place(guesses) if guesses.size else np.zeros((*guesses.shape[:-1], 2))
    T = int(model.config.T) if model.denoises else 0
    return write_item_map_file(run, {
        "items_2d": item_map.items_2d.astype(np.float32), "users": held_out.astype(np.int32),
        "interests_2d": placed_interests.astype(np.float16), "guesses_2d": placed_guesses.astype(np.float16),
        "steps": explore.map_steps(T) if model.denoises else np.zeros(0, dtype=np.int64),
        "fitted_on": np.int64(item_map.fitted_on)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=50, help="at most this many epochs a run (default: 50)")
    parser.add_argument("--patience", type=int, default=5,
                        help="stop a run after this many epochs without a better validation HR@50 (default: 5)")
    parser.add_argument("--max-minutes", type=float, default=60,
                        help="safety net: the wall clock of each run's training (default: 60)")
    parser.add_argument("--out", default=str(HERE / "default_runs"),
                        help="where the runs go (default: app/default_runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=list(RUNS), metavar="NAME",
                        help=f"retrain only these runs (of {', '.join(RUNS)})")
    parser.add_argument("--presets-only", action="store_true", help="train nothing; rewrite the runs' presets.json")
    parser.add_argument("--lessons-only", action="store_true",
                        help="train nothing: write the DimeRec runs' sample_or_mean.json again")
    args = parser.parse_args()
    out = Path(args.out)
    if args.lessons_only:
        for name, flags in RUNS.items():
            if flags[1] == "dimerec" and (out / name).is_dir() and (not args.only or name in args.only):
                write_lesson(out / name)
        return
    if args.presets_only:
        for name in args.only or RUNS:
            print(f"{name}: {write_presets(out / name)}; item map {write_item_map(out / name) / 1e3:.0f} kB",
                  flush=True)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in RUNS.items():
            if args.only and name not in args.only:
                continue
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "dimerec", "train", *flags, "--dataset", "planted", "--seed", str(args.seed),
                   "--max-epochs", str(args.max_epochs), "--patience", str(args.patience),
                   "--max-minutes", str(args.max_minutes), "--quiet", "--out", str(run)]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for file in KEEP:
                if (run / file).exists():
                    shutil.copy2(run / file, target / file)
            write_presets(target)
            write_item_map(target)
            if flags[1] == "dimerec":
                write_lesson(target)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {', '.join(args.only or RUNS)} to {out} ({size / 1e6:.1f} MB in all)")


if __name__ == "__main__":
    main()
