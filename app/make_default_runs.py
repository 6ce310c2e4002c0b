"""Regenerate the app's built-in runs in app/default_runs/ (committed, a few MB).

    OMP_NUM_THREADS=1 python app/make_default_runs.py            # about 3-4 minutes on 2 CPU cores

Trains five models on the `planted` world with the command line, each for a short wall-clock
budget, and keeps only what the app reads (config.json, best.pt, losses.csv, valid.csv,
metrics.json and, for the models that denoise, step_metrics.json):

- dimerec-planted         DimeRec, `--preset ours` (the default settings)
- dimerec-nogrw-planted   the same without the geodesic random walk (`--no-grw`), for the Training page
- dimerec-nodiff-planted  the no-diffusion control (`--model dimerec-nodiff`)
- dreamrec-planted        DreamRec: a Euclidean chain guided by one SASRec vector, for the Denoising and Steps pages
- diffurec-planted        DiffuRec: a Euclidean chain over the history's item vectors, likewise

`--only NAME ...` retrains only those runs (the others, and the numbers tests read from them, stay).
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
RUNS = {
    "dimerec-planted": ["--model", "dimerec"],
    "dimerec-nogrw-planted": ["--model", "dimerec", "--no-grw"],
    "dimerec-nodiff-planted": ["--model", "dimerec-nodiff"],
    "dreamrec-planted": ["--model", "dreamrec"],
    "diffurec-planted": ["--model", "diffurec"],
}


def write_lesson(run: Path) -> None:
    """The run's sample_or_mean.json (the "Sample or mean?" page's numbers: explore.run_lesson), so that the page
    opens at once."""
    sys.path.insert(0, str(HERE.parent))
    from dimerec import explore
    from dimerec.runs import load_run, write_json_atomic
    from dimerec.serving import serving_of

    model, data, config = load_run(run)
    lesson = explore.run_lesson(model, data, config, serving_of(model, config["serving"]))
    write_json_atomic(lesson, run / "sample_or_mean.json")
    print(f"wrote {run / 'sample_or_mean.json'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=0.8, help="training budget of each run (default: 0.8)")
    parser.add_argument("--out", default=str(HERE / "default_runs"),
                        help="where the runs go (default: app/default_runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=list(RUNS), metavar="NAME",
                        help=f"retrain only these runs (of {', '.join(RUNS)})")
    parser.add_argument("--lessons-only", action="store_true",
                        help="retrain nothing: write the DimeRec runs' sample_or_mean.json again")
    args = parser.parse_args()
    out = Path(args.out)
    if args.lessons_only:
        for name, flags in RUNS.items():
            if flags[1] == "dimerec" and (out / name).is_dir():
                write_lesson(out / name)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in RUNS.items():
            if args.only and name not in args.only:
                continue
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "dimerec", "train", *flags, "--dataset", "planted", "--seed", str(args.seed),
                   "--max-minutes", str(args.minutes), "--quiet", "--out", str(run)]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for file in KEEP:
                if (run / file).exists():
                    shutil.copy2(run / file, target / file)
            if flags[1] == "dimerec":
                write_lesson(target)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {', '.join(args.only or RUNS)} to {out} ({size / 1e6:.1f} MB in all)")


if __name__ == "__main__":
    main()
