"""`python -m dimerec reproduce NAME --dataset D`: train a set of models over seeds, test once, tabulate.

Runs go to `runs/reproduce/<dataset>/<label>/seed<N>/`; a run whose metrics.json exists
is skipped, so an interrupted reproduction resumes where it stopped. The table
(`results/<name>_<dataset>.md` and `.csv`) gives mean ± std over seeds of the test
metrics, names the protocol, marks the best baseline, and compares DimeRec with it
by a paired t-test over seeds.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dimerec.errors import DimeRecError

REPORTED = ("HR@10", "HR@20", "HR@50", "NDCG@10", "NDCG@20", "NDCG@50")


@dataclass
class RunSpec:
    label: str  # the row of the table
    model: str
    flags: list[str] = field(default_factory=list)
    role: str = "baseline"  # "ours" (compared), "baseline", "floor" or "control"


EXPERIMENTS: dict[str, list[RunSpec]] = {
    # issue 3: DimeRec as written, as decided, the control, and its GEM alone
    "dimerec": [
        RunSpec("MostPopular", "pop", role="floor"),
        RunSpec("ComiRec-SA", "comirec-sa"),
        RunSpec("DimeRec (paper)", "dimerec", ["--preset", "paper"], role="variant"),
        RunSpec("DimeRec (ours)", "dimerec", ["--preset", "ours"], role="ours"),
        RunSpec("DimeRec (ours, serve mean)", "dimerec", ["--preset", "ours", "--serve", "mean"], role="variant"),
        RunSpec("no-diffusion control", "dimerec-nodiff", role="control"),
    ],
    # issue 4 / the paper's Table 1: the seven baselines and DimeRec, MostPopular as the floor.
    # (Per-model tuning on validation is not wired in yet: every model runs at its defaults.)
    "table1": [
        RunSpec("MostPopular", "pop", role="floor"),
        RunSpec("SASRec", "sasrec"),
        RunSpec("GRU4Rec", "gru4rec"),
        RunSpec("MIND", "mind"),
        RunSpec("ComiRec-SA", "comirec-sa"),
        RunSpec("ComiRec-DR", "comirec-dr"),
        RunSpec("Mult-VAE", "multvae"),
        RunSpec("DreamRec", "dreamrec"),
        RunSpec("DiffuRec", "diffurec"),
        RunSpec("DimeRec", "dimerec", role="ours"),
    ],
}


def run_dir(root: Path, dataset: str, spec: RunSpec, seed: int) -> Path:
    safe = re.sub(r"[^a-z0-9]+", "-", spec.label.lower()).strip("-")
    return root / dataset / safe / f"seed{seed}"


def run_all(specs: list[RunSpec], dataset: str, seeds: list[int], *, data_dir: str | None, root: Path,
            max_minutes: float, extra_flags: list[str]) -> list[dict]:
    from dimerec.cli import main as cli_main

    jobs = [(spec, seed) for spec in specs for seed in seeds]
    results, durations = [], []
    bar = tqdm(jobs, desc="reproduce", unit="run")
    for spec, seed in bar:
        out = run_dir(root, dataset, spec, seed)
        bar.set_description(f"{spec.label}, seed {seed}")
        if not (out / "metrics.json").exists():
            started = time.perf_counter()
            argv = ["train", "--model", spec.model, "--dataset", dataset, "--seed", str(seed), "--out", str(out),
                    "--max-minutes", str(max_minutes), "--quiet", "--overwrite", *spec.flags, *extra_flags]
            if data_dir:
                argv += ["--data-dir", data_dir]
            if cli_main(argv) != 0:
                raise DimeRecError(f"run {out} failed (see the message above); rerun to resume the rest")
            durations.append(time.perf_counter() - started)
            remaining = len(jobs) - bar.n - 1
            bar.set_postfix_str(f"~{remaining * np.mean(durations) / 60:.0f} min left")
        metrics = json.loads((out / "metrics.json").read_text())
        results.append({"label": spec.label, "role": spec.role, "seed": seed, "run": str(out), **metrics})
    return results


def summarize(results: list[dict]) -> tuple[pd.DataFrame, str]:
    """Mean ± std of test metrics per model, in %; plus a paired t-test of ours vs the best baseline."""
    from scipy import stats

    rows = []
    for label, group in pd.DataFrame(results).groupby("label", sort=False):
        tests = pd.DataFrame(list(group["test"]))
        row = {"model": label, "role": group["role"].iloc[0], "seeds": len(group),
               "train_minutes": float(group["train_minutes"].mean())}
        for key in REPORTED:
            row[key] = 100 * tests[key].mean()
            row[f"{key} std"] = 100 * tests[key].std(ddof=1) if len(tests) > 1 else 0.0
        rows.append(row)
    table = pd.DataFrame(rows)
    baselines = table[table.role == "baseline"]
    note = ""
    ours = table[table.role == "ours"]
    if len(baselines) and len(ours):
        best = baselines.loc[baselines["HR@50"].idxmax(), "model"]
        table["best baseline"] = table["model"] == best
        by_seed = pd.DataFrame(results)
        a = by_seed[by_seed.label == ours["model"].iloc[0]].sort_values("seed")
        b = by_seed[by_seed.label == best].sort_values("seed")
        seeds = sorted(set(a.seed) & set(b.seed))
        if len(seeds) >= 2:
            x = [t["HR@50"] for t in a[a.seed.isin(seeds)]["test"]]
            y = [t["HR@50"] for t in b[b.seed.isin(seeds)]["test"]]
            p = stats.ttest_rel(x, y).pvalue
            note = (f"Paired t-test over {len(seeds)} seeds, test HR@50, {ours['model'].iloc[0]} vs {best}: "
                    f"mean difference {100 * (np.mean(x) - np.mean(y)):+.2f} points, p = {p:.3g}.")
    return table, note


def write_table(name: str, dataset: str, results: list[dict], note: str, table: pd.DataFrame,
                out_dir: Path, command: str) -> Path:
    protocol = results[0]["protocol"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{name}_{dataset}"
    table.assign(protocol=protocol, dataset=dataset).to_csv(stem.with_suffix(".csv"), index=False)
    lines = [f"# {name} on {dataset}", "",
             f"Test split, {protocol} protocol, already-seen items {'masked' if results[0]['mask_seen'] else 'kept'}; "
             f"values in %, mean ± std over seeds; models selected on validation HR@50.", "",
             f"Command: `{command}`", ""]
    header = ["model", "seeds", *REPORTED, "train min"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        mark = " ★" if r.get("best baseline", False) else ""
        cells = [f"{r['model']}{mark}", str(r["seeds"])]
        cells += [f"{r[k]:.2f} ± {r[f'{k} std']:.2f}" for k in REPORTED]
        cells.append(f"{r['train_minutes']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "★ best baseline by HR@50." if "best baseline" in table else "", note, ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    return stem.with_suffix(".md")


def reproduce(name: str, dataset: str, seeds: int, *, data_dir: str | None, max_minutes: float,
              root: Path = Path("runs/reproduce"), out_dir: Path = Path("results"),
              extra_flags: list[str] | None = None) -> Path:
    if name not in EXPERIMENTS:
        raise DimeRecError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    results = run_all(EXPERIMENTS[name], dataset, list(range(seeds)), data_dir=data_dir, root=root,
                      max_minutes=max_minutes, extra_flags=extra_flags or [])
    table, note = summarize(results)
    command = "python -m dimerec " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else \
        f"python -m dimerec reproduce {name} --dataset {dataset} --seeds {seeds} --max-minutes {max_minutes}"
    return write_table(name, dataset, results, note, table, out_dir, command)
