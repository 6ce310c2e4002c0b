"""Tabulating an experiment's runs: mean ± std over seeds of the test metrics, the paired t-test of ours against
the best baseline, the written table, CSV and figure, and what each experiment adds to its table (SECTIONS)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dimerec.errors import DimeRecError
from dimerec.reproduce.experiments import (BEYOND_REPORTED, COMPARES_PAPERS, CONTROL, DESCRIPTIONS, DIFFUSION_GROUPS,
                                           OURS, OWN_CONTROL, PERCENT, POP, REPORTED, SERVE_MEAN)
from dimerec.reproduce.runner import Budget, load_run_cached, trained_run
from dimerec.explore import loss_summary
from dimerec.markdown import CUT_SHORT_COLUMN, cut_short_rows, markdown_table
from dimerec.runs import read_config, read_losses, read_step_metrics, read_valid


def summarize(results: list[dict]) -> tuple[pd.DataFrame, str]:
    """Mean ± std of test metrics per model, in %; plus a paired t-test of ours vs the best baseline."""

    rows = []
    for label, group in by_label(results).items():
        tests = pd.DataFrame([r["test"] for r in group])
        row = {"model": label, "role": group[0]["role"], "seeds": len(group),
               "train_minutes": float(np.mean([r["train_minutes"] for r in group])),
               "steps": float(np.mean([r["steps"] for r in group])), **training_length(group)}
        for key in REPORTED:
            row[key] = 100 * tests[key].mean()
            row[f"{key} std"] = 100 * tests[key].std(ddof=1) if len(tests) > 1 else 0.0
        for key in BEYOND_REPORTED:  # runs scored before these metrics existed have none: NaN, shown as —
            scale = 100 if key in PERCENT else 1
            row[key] = scale * tests[key].mean() if key in tests else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    baselines = table[table.role == "baseline"]
    note = ""
    ours = table[table.role == "ours"]
    if len(baselines) and len(ours):
        best = baselines.loc[baselines["HR@50"].idxmax(), "model"]
        table["best baseline"] = table["model"] == best
        x, y, p, n = paired(pd.DataFrame(results), ours["model"].iloc[0], best, "HR@50")
        if n >= 2:
            note = (f"Paired t-test over {n} seeds, test HR@50, {ours['model'].iloc[0]} vs {best}: "
                    f"mean difference {100 * (x - y):+.2f} points, p = {p:.3g}.")
    return table, note


FELL = 0.9  # a run whose last validation HR@50 is under this share of its best fell after its best: not a plateau


def fell_after_best(run: Path) -> bool:
    """Whether the run's validation HR@50 ended under FELL times its best (training diverged or overfitted after the
    checkpoint kept), from its valid.csv."""
    valid = read_valid(run)
    scores = [] if valid is None else valid["HR@50"].tolist()
    return bool(scores) and scores[-1] < FELL * max(scores)


def by_label(results: list[dict]) -> dict[str, list[dict]]:
    """The results of each row (label), in the order rows first appear; kept as dicts, so a key a result lacks stays
    missing (a DataFrame would fill it with NaN)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    return groups


CUT_SHORT = ("max_minutes", "max_steps")  # trainer.stop_reason's budgets that stop a run whatever its validation


def training_length(group: list[dict]) -> dict:
    """The epochs a row's runs trained (mean), how many plateaued: stopped early, their validation HR@50 no longer
    rising (patience), and not fallen far below its best ("k fell": stopped by patience after falling; the test
    figures are the best checkpoint's either way), and how many were cut short: stopped by their clock or step cap
    before patience could stop them; runs written before either was recorded give NaN and None."""
    epochs = [r["epochs_trained"] for r in group if r.get("epochs_trained") is not None]
    mean_epochs = float(np.mean(epochs)) if epochs else np.nan
    if any(r.get("stopped_by") is None for r in group):
        return {"epochs": mean_epochs, "plateaued": None, CUT_SHORT_COLUMN: None}
    by_patience = [r for r in group if r["stopped_by"] == "patience"]
    fell = sum(fell_after_best(trained_run(r)) for r in by_patience)
    return {"epochs": mean_epochs,
            "plateaued": f"{len(by_patience) - fell}/{len(group)}" + (f", {fell} fell" if fell else ""),
            CUT_SHORT_COLUMN: sum(r["stopped_by"] in CUT_SHORT for r in group)}


def cut_short_note(table: pd.DataFrame) -> list[str]:
    """A line naming the rows some of whose runs were cut short by their clock or step cap (training_length): their
    figures are lower bounds of what those runs reach trained to their plateau."""
    rows = cut_short_rows(table)
    if rows.empty:
        return []
    counts = zip(rows["model"], rows[CUT_SHORT_COLUMN], rows["seeds"])
    named = ", ".join(f"{m} ({n:.0f} of {s} runs)" for m, n, s in counts)
    return ["", f"Cut short by their clock or step cap, not stopped by their validation: {named}. Their figures are "
                f"lower bounds: trained on to a plateau, those runs would score as high or higher on validation."]


def paired(frame: pd.DataFrame, a_label: str, b_label: str, key: str) -> tuple[float, float, float, int]:
    """Mean test `key` of two rows of `frame` (one result per label and seed) over their shared seeds, the paired
    t-test's p (NaN under 2 seeds) and the number of seeds."""
    from scipy import stats

    a = frame[frame.label == a_label].sort_values("seed")
    b = frame[frame.label == b_label].sort_values("seed")
    seeds = sorted(set(a.seed) & set(b.seed))
    x = [t[key] for t in a[a.seed.isin(seeds)]["test"]]
    y = [t[key] for t in b[b.seed.isin(seeds)]["test"]]
    p = stats.ttest_rel(x, y).pvalue if len(seeds) >= 2 else float("nan")
    return float(np.mean(x)) if x else float("nan"), float(np.mean(y)) if y else float("nan"), p, len(seeds)


def metric_lines(table: pd.DataFrame) -> list[str]:
    cells = pd.DataFrame({"model": [f"{m}{' ★' if b else ''}" for m, b in
                                    zip(table["model"], table.get("best baseline", [False] * len(table)))],
                          "seeds": table["seeds"]})
    for key in REPORTED:
        cells[key] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(table[key], table[f"{key} std"])]
    cells["train min"] = [f"{v:.1f}" for v in table["train_minutes"]]
    cells["steps"] = [f"{v:.0f}" for v in table["steps"]]
    if table["plateaued"].notna().any():  # runs that record their epochs and why they stopped
        cells["epochs"] = ["—" if np.isnan(v) else f"{v:.1f}" for v in table["epochs"]]
        cells["plateaued"] = [v if isinstance(v, str) else "—" for v in table["plateaued"]]  # None reads NaN here
    return markdown_table(cells)


def beyond_lines(table: pd.DataFrame) -> list[str]:
    """The beyond-accuracy table (issue 20): MRR@50 and the exposure of the top-50 lists, mean over seeds."""
    cells = pd.DataFrame({"model": table["model"]})
    for key in BEYOND_REPORTED:
        unit = " %" if key in PERCENT else ""
        digits = "{:.3f}" if key.startswith("Gini") else "{:.1f}" if key.startswith("Average") else "{:.2f}"
        cells[f"{key}{unit}"] = ["—" if np.isnan(v) else digits.format(v) for v in table[key]]
    return ["## Beyond accuracy (test, top 50)", "",
            "MRR@50: 1 / rank of the target in the top 50 (0 outside). Over every test row's top-50 list: "
            "ItemCoverage, the share of the catalogue recommended at least once; Gini of the items' exposure "
            "counts (0: every item recommended equally often; near 1: a few items take it all); "
            "AveragePopularity, training interactions of a recommended item on average; TailPercentage, the "
            "share of recommended slots outside the 20% most popular items (`dimerec/metrics.py`). "
            "Mean over seeds; — where a run was scored before these were measured.", "", *markdown_table(cells)]


def write_outputs(name: str, dataset: str, results: list[dict], table: pd.DataFrame, sections: list[str],
                  figure, out_dir: Path, command: str, budget: Budget, tuned: bool = False) -> Path:
    from dimerec import figures

    protocol = results[0]["protocol"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{name}_{dataset}"
    table.assign(protocol=protocol, dataset=dataset).to_csv(stem.with_suffix(".csv"), index=False)
    settings = ""
    if tuned or name in COMPARES_PAPERS:
        settings = (" Settings: each model's best trial of the grid on validation (Tuning, below)." if tuned else
                    " Settings: every model at its defaults, untuned (no `--tune`).")
    lines = [f"# {name} on {dataset}: {DESCRIPTIONS[name]}", "",
             f"Test split, {protocol} protocol, already-seen items {'masked' if results[0]['mask_seen'] else 'kept'}; "
             f"values in %, mean ± std over seeds; each run {budget}, "
             f"selected on validation HR@50.{settings}", *own_budget_note(results, budget), *device_note(results),
             *sampling_note(results),
             *training_note(results), *cut_short_note(table), "",
             f"Command: `{command}`", "",
             *sections]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if figure is not None:
        figures.save(figure, stem)
    return stem.with_suffix(".md")


# ----- what each experiment adds to its table ---------------------------------------------------------------

def own_budget_note(results: list[dict], budget: Budget) -> list[str]:
    """A line for each budget other than the table's that rows trained under (a row's budget_scale, its own
    patience, or a run reused from a shorter clock), read from the runs' config.json, so the budget line above
    is not taken to hold for them."""
    budgets: dict[str, list[str]] = {}
    for r in results:
        config = read_config(trained_run(r), required=False)
        if config is None:
            continue
        own = str(budget.as_run(config["train_config"]))
        if own != str(budget) and r["label"] not in budgets.setdefault(own, []):
            budgets[own].append(r["label"])
    return [line for own, labels in budgets.items()
            for line in ("", f"Trained on a budget of their own: {', '.join(labels)}; each run {own}.")]


def device_note(results: list[dict]) -> list[str]:
    """A line naming the models whose runs trained off the CPU (config.json's --device), if any: their
    "train min" is that device's time, and the same seed repeats their numbers there, not on a CPU."""
    devices: dict[str, set[str]] = {}
    for r in results:
        config = read_config(trained_run(r), required=False)
        device = config["train_config"].get("device", "cpu") if config else "cpu"
        if device != "cpu":
            devices.setdefault(device, set()).add(r["label"])
    return [line for device, labels in devices.items() for line in (
        "", f"Trained with `--device {device}` (a GPU): {', '.join(sorted(labels))}; their train min is GPU time, "
            f"and a CPU rerun of the same seed gives other numbers (float rounding changes the training path).")]


def trained_results(results: list[dict]) -> list[dict]:
    """The results of runs that trained: a served row is its source's training, and MostPopular trains nothing."""
    return [r for r in results if not r.get("served_from") and r.get("model") != "pop"]


def training_note(results: list[dict]) -> list[str]:
    """How long the table's training took: the runs trained (served rows and MostPopular train nothing), the sum of
    their own train_minutes (validation and scoring excluded), and their epochs."""
    trained = trained_results(results)
    if not trained:
        return []
    epochs = [r["epochs_trained"] for r in trained if r.get("epochs_trained") is not None]
    span = ("" if not epochs else f"; {epochs[0]:.0f} epochs" if min(epochs) == max(epochs)
            else f"; {min(epochs):.0f} to {max(epochs):.0f} epochs a run")
    runs = f"{len(trained)} run" + ("s" if len(trained) > 1 else "")
    return ["", f"Training: {runs}, {sum(r['train_minutes'] for r in trained):.0f} minutes of "
                f"training in all (each run's own clock, validation and scoring excluded){span}."]


def sampling_note(results: list[dict]) -> list[str]:
    """A line saying how each row's runs drew their training samples (config.json's --sampling): windows (every
    position of a window a target, one pass a window) or prefixes (one target a pass); MostPopular trains nothing."""
    by_sampling: dict[str, set[str]] = {}
    for r in trained_results(results):
        config = read_config(trained_run(r), required=False)
        if config is None:
            continue
        train_config = config["train_config"]
        by_sampling.setdefault(train_config.get("sampling") or "prefixes", set()).add(r["label"])
    if not by_sampling:
        return []
    parts = [f"{sampling} ({', '.join(sorted(labels))})" for sampling, labels in sorted(by_sampling.items())]
    return ["", "Training samples (`--sampling`): " + "; ".join(parts) + ". windows: every position of a window a "
            "target, one pass a window; prefixes: one (history, next item) pair a pass (DiffuRec and MultVAE "
            "always: their passes cannot be shared between targets)."]


def section_metrics(name, dataset, results, table, note, **_):
    from dimerec import figures

    lines = metric_lines(table)
    if "best baseline" in table:
        lines += ["", "★ best baseline by HR@50."]
    lines += ["", note] if note else []
    return lines, figures.metric_bars(table, f"{name} on {dataset}: test HR@50 and NDCG@50 (mean ± std)"), table


# Numbers the baselines' own papers or repositories report under the sampled protocol (each test user's last
# item among 100 unseen items), where our dataset is theirs: (model, dataset) -> (source, HR@10 %, NDCG@10 %).
SAMPLED_REFERENCES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("sasrec", "ml-1m"): ("SASRec: the paper (Kang & McAuley, ICDM 2018) reports HR@10 82.45 on ML-1M; the "
                          "pmixer/SASRec.pytorch README two test runs (1,000 epochs, max length 200)",
                          "82.45 (paper); 81.90, 82.25 (pmixer)", "58.97, 59.18 (pmixer)"),
}


def section_table1(name, dataset, results, table, note, *, data_dir=None, **kwargs):
    """Table 1, then each model under the sampled protocol beside what its own paper reports (a sanity check)."""
    from dimerec.trainer import sampled_test

    lines, figure, csv_table = section_metrics(name, dataset, results, table, note)
    rows, diffusion_steps = [], {}
    for r in tqdm(results, desc="sampled-100 check", unit="run"):
        config = read_config(trained_run(r))
        if "T" in config["model_config"]:
            diffusion_steps.setdefault(r["label"], (r["model"], set()))[1].add(config["model_config"]["T"])
        got = r.get("sampled_test")  # recorded where test was scored; a run scored before that: from its weights
        if got is None:
            model, data, config, serve = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
            got = sampled_test(model, data, {**config["train_config"], "seed": r["seed"]}, serve)
        if got is None:  # a mixture-served row is scored by the full ranking only
            continue
        rows.append({"model": r["label"], "kind": r["model"], "HR@10": 100 * got["HR@10"],
                     "NDCG@10": 100 * got["NDCG@10"]})
    per_run = pd.DataFrame(rows)
    check = per_run.groupby("model", sort=False).agg(kind=("kind", "first"), hr=("HR@10", "mean"),
                                                     ndcg=("NDCG@10", "mean")).reset_index()
    shown = pd.DataFrame({"model": check["model"], "sampled HR@10": check["hr"], "sampled NDCG@10": check["ndcg"],
                          "reported HR@10": [SAMPLED_REFERENCES.get((k, dataset), ("", "—", "—"))[1]
                                             for k in check["kind"]],
                          "reported NDCG@10": [SAMPLED_REFERENCES.get((k, dataset), ("", "—", "—"))[2]
                                               for k in check["kind"]]})
    sources = sorted({SAMPLED_REFERENCES[(k, dataset)][0] for k in check["kind"] if (k, dataset) in SAMPLED_REFERENCES})
    if diffusion_steps:
        from dimerec.models import MODELS

        def help_of(kind: str) -> str:
            return next(f.metadata["help"] for f in fields(MODELS[kind].Config) if f.name == "T")

        lines += ["", "Diffusion steps T (`--T`), with each module's own note on it: " + "; ".join(
            f"{label} {'/'.join(map(str, sorted(steps)))} ({help_of(kind)})"
            for label, (kind, steps) in diffusion_steps.items()) + "."]
    lines += ["", *beyond_lines(table)]
    lines += ["", "## Sanity check: the sampled protocol of the baselines' own papers", "",
              "Each test user's last item ranked among 100 items the user never interacted with "
              "(`python -m dimerec evaluate RUN --sampled-negatives 100`), mean over seeds, in %; far kinder than the "
              "full ranking above. The reported columns are filled only where the source used this dataset and "
              "protocol; it trained far longer than this table's budget, and on every user's earlier items "
              "(leave-one-out), "
              "where our test users are held out of training.", "", *markdown_table(shown), ""]
    lines += [f"Source: {source}." for source in sources] or ["No baseline reports numbers on this dataset under "
                                                             "this protocol."]
    return lines, figure, csv_table


def section_table2(name, dataset, results, table, note, *, data_dir=None, max_rows=None, **_):
    """Linear probing of each model's item table and distinct categories in its users' top 100 (test users)."""
    from dimerec import figures
    from dimerec.analysis import category_diversity

    probes = probe_runs(results, data_dir)
    if probes["probe accuracy"].isna().all():
        raise DimeRecError(f"{dataset} has no item categories: Table 2 needs them (ml-1m genres, planted)")
    rows = []
    for r in tqdm(results, desc="top-100 categories", unit="run"):
        model, data, config, serve = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
        split = data.split(config["train_config"]["split_seed"])
        diversity = category_diversity(model, data, split.test, k=100, protocol=r["protocol"], seed=r["seed"],
                                       max_rows=max_rows, serve=serve)
        rows.append({"model": r["label"], "categories in top 100": diversity["mean"],
                     "counting": diversity["counting"]})
    per_run = pd.DataFrame(rows)
    agg = per_run.groupby("model", sort=False)["categories in top 100"].agg(["mean", "std"]).fillna(0.0)
    summary = probes.merge(agg.rename(columns={"mean": "categories in top 100", "std": "categories in top 100 std"}),
                           left_on="model", right_index=True)
    shown = pd.DataFrame({"model": summary["model"]})
    for key in ("probe accuracy", "categories in top 100"):
        shown[key] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(summary[key], summary[f"{key} std"])]
    lines = ["Linear probing: logistic regression on the frozen item table, 5-fold stratified cross-validation; "
             f"majority-class floor {summary['majority floor'].iloc[0]:.2f}%. Labels: {probes['labelling'].iloc[0]}. "
             f"Diversity: {rows[0]['counting']}; test users"
             f"{f', {max_rows} sampled rows' if max_rows else ''}, top 100.", "", *markdown_table(shown),
             "", "Test metrics of the same runs:", "", *metric_lines(table), "", *beyond_lines(table)]
    figure = figures.table2_bars(summary, f"{name} on {dataset}: item-embedding probing and top-100 diversity")
    return lines, figure, summary.drop(columns=["labelling"]).merge(table, on="model")


def section_fig4(name, dataset, results, table, note, **_):
    from dimerec import figures

    curves = {r["label"]: read_losses(trained_run(r))
              for r in results if r["seed"] == results[0]["seed"]}
    lines = [f"Loss curves of seed {results[0]['seed']} (figure: `{name}_{dataset}.html`, a rolling mean over "
             "100 steps); the table gives each curve's mean over its first and last 10% of steps.", ""]
    summary = pd.concat([loss_summary(frame).assign(run=label) for label, frame in curves.items()], ignore_index=True)
    summary = summary[["run", *summary.columns[:-1]]]
    lines += markdown_table(summary, "{:.4f}")
    lines += ["", *metric_lines(table)]
    return lines, figures.loss_curves(curves, f"Fig. 4 on {dataset}: losses with and without GRW"), summary


def section_fig5(name, dataset, results, table, note, **_):
    from dimerec import figures

    rows = []
    for r in results:
        steps = read_step_metrics(trained_run(r))
        for s in steps["steps"]:
            rows.append({"model": r["label"], "seed": r["seed"], "step": s["step"], "t": s["t"],
                         "HR@50": 100 * s["HR@50"], "NDCG@50": 100 * s["NDCG@50"]})
    per_step = pd.DataFrame(rows)
    curve = per_step.groupby(["model", "step", "t"], sort=False)[["HR@50", "NDCG@50"]].agg(["mean", "std"])
    curve.columns = [f"{a} {b}" for a, b in curve.columns]
    curve = curve.reset_index().fillna(0.0)
    wide = curve.pivot(index=["step", "t"], columns="model", values="HR@50 mean").reset_index()
    lines = ["HR@50 (%) of x̂0 predicted at each reverse step (step 1 starts from x_T), validation users, mean over "
             "seeds; the paper's Fig. 5 shows it rising along the chain.", "", *markdown_table(wide),
             "", "Final test metrics of the same runs:", "", *metric_lines(table)]
    return lines, figures.step_curves(curve, f"Fig. 5 on {dataset}: HR@50 of x̂0 along the reverse chain"), curve


def section_table4(name, dataset, results, table, note, *, data_dir=None, **_):
    """Table 4's metrics, and Fig. 3: linear probing of every run's item table (as in Table 2)."""
    from dimerec import figures

    probes = probe_runs(results, data_dir)
    table = table.merge(probes, on="model", how="left")
    lines = metric_lines(table)
    if probes["probe accuracy"].notna().any():
        lines += ["", "Fig. 3: linear-probe accuracy (%) of each run's item table on the item categories "
                  f"({probes['labelling'].iloc[0]}), mean over seeds; the paper's variants 1-4 are "
                  "'w/o L_gem' and the three 'Fig. 3 variant' rows.", "",
                  *markdown_table(table[["model", "probe accuracy", "probe accuracy std"]])]
    figure = figures.probe_bars(table, f"Fig. 3 on {dataset}: linear probing after ablations") \
        if probes["probe accuracy"].notna().any() else figures.metric_bars(table, f"{name} on {dataset}")
    return lines, figure, table.drop(columns=["labelling", "majority floor"])


def probe_runs(results, data_dir) -> pd.DataFrame:
    """Linear-probe accuracy of each run's item table, mean and std over seeds, per row label."""
    from dimerec.analysis import linear_probe

    rows = []
    for r in tqdm(results, desc="probing", unit="run"):
        model, data, _, _ = load_run_cached(trained_run(r), data_dir)
        if not any(data.item_categories):
            rows.append({"model": r["label"], "probe accuracy": np.nan, "majority floor": np.nan,
                         "labelling": "no item categories"})
            continue
        probe = linear_probe(model.item_vectors().detach(), data, seed=r["seed"])
        rows.append({"model": r["label"], "probe accuracy": 100 * probe["accuracy"],
                     "majority floor": 100 * probe["majority_accuracy"], "labelling": probe["labels"]})
    frame = pd.DataFrame(rows)
    agg = frame.groupby("model", sort=False).agg(
        **{"probe accuracy": ("probe accuracy", "mean"), "probe accuracy std": ("probe accuracy", "std"),
           "majority floor": ("majority floor", "first"), "labelling": ("labelling", "first")}).reset_index()
    agg["probe accuracy std"] = agg["probe accuracy std"].fillna(0.0)
    return agg


def section_diffusion(name, dataset, results, table, note, *, data_dir=None, **_):
    """Issue 16: one table per hypothesis (validation HR@50 chooses; test read once per run), every variant's
    curve of x̂0 along its chain, its serving cost, the verdict against the control, and the chain's angles."""
    frame = pd.DataFrame(results)
    curve, costs, load = chain_curves(results, data_dir)
    rise = chain_rise(curve)
    valid = valid_hr50(frame)
    lines = [*diffusion_group_lines(table, valid, rise, costs, load), "", *beyond_lines(table),
             "", *verdict_lines(diffusion_verdict(frame, valid, rise), valid),
             "", *chain_angle_lines(results, data_dir)]
    figure = chain_figure(curve, valid, dataset)
    csv_table = table.assign(**{"valid HR@50": [valid[m] for m in table.model],
                                "ms per user": [costs.get(m, np.nan) for m in table.model],
                                "chain first": [rise["first"].get(m, np.nan) for m in table.model],
                                "chain last": [rise["last"].get(m, np.nan) for m in table.model]})
    return lines, figure, csv_table


def chain_curves(results, data_dir) -> tuple[pd.DataFrame, dict[str, float], tuple[float, float]]:
    """HR@50 and NDCG@50 (%) of x̂0 at each reverse step on validation, one row per chain-served run and step; each
    row's serving cost in ms per user (its seed-0 run); and the lowest and highest one-minute load average of the
    machine as each cost was timed (the cost is wall clock: other work on the cores inflates it)."""
    from dimerec.analysis import serving_cost
    from dimerec.evaluate import step_metrics

    curves, costs, loads = [], {}, []
    for r in tqdm(results, desc="chains and serving cost", unit="run"):
        model, data, config, serve = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
        split, tc = data.split(config["train_config"]["split_seed"]), config["train_config"]
        if model.denoises and serve.serve == "final":
            steps = step_metrics(model, data, split.valid, tc["protocol"], mask_seen=tc["mask_seen"],
                                 seed=r["seed"], max_rows=tc.get("valid_max_rows"), serve=serve)["steps"]
            curves += [{"model": r["label"], "seed": r["seed"], "step": s["step"], "t": s["t"],
                        "HR@50": 100 * s["HR@50"], "NDCG@50": 100 * s["NDCG@50"]} for s in steps]
        if r["seed"] == 0:
            loads.append(os.getloadavg()[0])
            costs[r["label"]] = serving_cost(model, data, split.valid, seed=0, serve=serve)
    return pd.DataFrame(curves), costs, (min(loads, default=0.0), max(loads, default=0.0))


def chain_rise(curve: pd.DataFrame) -> pd.DataFrame:
    """Per model: HR@50 of x̂0 after the chain's first step, after its last, and the rise between, mean over seeds."""
    by_model = curve.groupby(["model", "seed"]).agg(first=("HR@50", "first"), last=("HR@50", "last"))
    by_model["rise"] = by_model["last"] - by_model["first"]
    return by_model.groupby("model")[["first", "last", "rise"]].mean()


def valid_hr50(frame: pd.DataFrame) -> dict[str, float]:
    """Validation HR@50 (%) of each row, mean over seeds: the only figure the diffusion section chooses by."""
    return {label: 100 * np.mean([v["HR@50"] for v in g["valid"]]) for label, g in frame.groupby("label")}


def diffusion_group_lines(table: pd.DataFrame, valid: dict[str, float], rise: pd.DataFrame,
                          costs: dict[str, float], load: tuple[float, float]) -> list[str]:
    """One Markdown table per hypothesis of DIFFUSION_GROUPS, each of its rows that ran."""
    def cell(label: str, key: str) -> str:
        row = table[table.model == label].iloc[0]
        return f"{row[key]:.2f} ± {row[f'{key} std']:.2f}"

    lines = ["Each row: test metrics in %, mean ± std over seeds; **valid HR@50** (the only figure anything is "
             "chosen by); the chain's first and last step (HR@50 of x̂0 on validation, mean over seeds; "
             "x̂0 after the first step from pure noise vs after the last); serving cost in ms per user (batch "
             f"1,024, seed 0, this machine: {os.cpu_count()} cores, a one-minute load average of {load[0]:.1f} to "
             f"{load[1]:.1f} while it was timed; wall clock, so other work on the cores inflates it)."]
    for group, specs in DIFFUSION_GROUPS.items():
        rows = []
        for spec in specs:
            if spec.label not in valid:
                continue
            chain = rise.loc[spec.label] if spec.label in rise.index else None
            rows.append({"variant": spec.label, "valid HR@50": f"{valid[spec.label]:.2f}",
                         "test HR@50": cell(spec.label, "HR@50"), "test NDCG@50": cell(spec.label, "NDCG@50"),
                         "chain: first step": "—" if chain is None else f"{chain['first']:.2f}",
                         "last step": "—" if chain is None else f"{chain['last']:.2f}",
                         "ms / user": f"{costs.get(spec.label, float('nan')):.3f}"})
        not_run = ["Not run in this reproduction (listed at the end of this file)."]
        lines += ["", f"## {group}", "", *(markdown_table(pd.DataFrame(rows)) if rows else not_run)]
    return lines


@dataclass(frozen=True)
class PairedTest:
    """Test `key` of row `a` against row `b`: their means over the shared seeds, the paired t-test's p, the seeds."""

    a: str
    b: str
    key: str
    x: float
    y: float
    p: float
    n: int


@dataclass(frozen=True)
class DiffusionVerdict:
    """The chain-served variant that validates best, against the control trained as it was, on test."""

    best: str
    control: str
    against_control: list[PairedTest]  # test HR@50 and NDCG@50
    chain: pd.Series | None  # the best variant's chain_rise row; None when it has no chain curve
    own_controls: list[PairedTest]  # H5 and H7, each against the control trained as it was (test HR@50)

    @property
    def cleared(self) -> bool:
        """The bar of issue 16: a chain that improves and matches the control on HR@50 and NDCG@50."""
        return self.chain is not None and self.chain["rise"] >= 0 and all(t.x >= t.y for t in self.against_control)


def diffusion_verdict(frame: pd.DataFrame, valid: dict[str, float], rise: pd.DataFrame) -> DiffusionVerdict:
    def test(a: str, b: str, key: str) -> PairedTest:
        return PairedTest(a, b, key, *paired(frame, a, b, key))

    # the verdict: the chain-served variant that validates best, against the control, on test
    chain_served = [s.label for g in list(DIFFUSION_GROUPS.values())[1:] for s in g
                    if s.label in valid and s.model == "dimerec"]
    chain_served.append(OURS.label)
    best = max(chain_served, key=lambda label: valid[label])
    control = OWN_CONTROL.get(best, CONTROL.label)  # the control trained as this variant was (budget, GEM, loss)
    return DiffusionVerdict(
        best=best, control=control, against_control=[test(best, control, key) for key in ("HR@50", "NDCG@50")],
        chain=rise.loc[best] if best in rise.index else None,
        own_controls=[test(ours, own, "HR@50") for ours, own in OWN_CONTROL.items() if ours in valid and own in valid])


def verdict_lines(v: DiffusionVerdict, valid: dict[str, float]) -> list[str]:
    lines = ["## Verdict", "", f"Best chain-served variant on validation: **{v.best}** (valid HR@50 "
             f"{valid[v.best]:.2f}; its control, {v.control}, validates at {valid.get(v.control, float('nan')):.2f})."]
    for t in v.against_control:
        x, y = t.x, t.y
        lines.append(f"- test {t.key}: {100 * x:.2f} vs the control's {100 * y:.2f} "
                     f"({100 * (x - y):+.2f} points, paired t-test over {t.n} seeds, "
                     f"p = {t.p:.3g}): {'matches or beats' if x >= y else 'below'} the control.")
    if v.chain is not None:
        r = v.chain
        lines.append(f"- its chain: HR@50 of x̂0 {r['first']:.2f} after the first step, {r['last']:.2f} after the "
                     f"last: the chain {'improves (as Fig. 5 claims)' if r['rise'] >= 0 else 'degrades'} "
                     f"along the way.")
    for t in v.own_controls:
        x, y = t.x, t.y
        lines.append(f"- {t.a}: {100 * x:.2f} vs {t.b}: {100 * y:.2f} test HR@50 "
                     f"({100 * (x - y):+.2f} points, p = {t.p:.3g}, {t.n} seeds).")
    lines.append(f"- the bar of issue 16 (a chain that improves and matches the control on HR@50 and NDCG@50): "
                 f"**{'cleared' if v.cleared else 'not cleared'}**.")
    return lines


def chain_angle_lines(results, data_dir) -> list[str]:
    """H6: where the chain's guesses land (seed 0, DimeRec as served by default)."""
    from dimerec.analysis import chain_angles

    source = next(r for r in results if r["label"] == OURS.label and r["seed"] == results[0]["seed"])
    model, data, config, serve = load_run_cached(trained_run(source), data_dir)
    angles = pd.DataFrame(chain_angles(model, data, data.split(config["train_config"]["split_seed"]).valid,
                                       seed=source["seed"], serve=serve))
    return ["## H6: where the chain's guesses land (DimeRec (ours), seed "
            f"{source['seed']}, 8 samples per validation row, at most 2,000 rows; degrees)", "",
            "A uniformly random direction lies at about 90° from the target. Each sample farther from the "
            "target than the samples' mean is a distribution too broad for one sample to rank well.", "",
            *markdown_table(angles, "{:.1f}")]


def chain_figure(curve: pd.DataFrame, valid: dict[str, float], dataset: str):
    """Every group's chains, HR@50 of x̂0 at each step (mean of seeds), with the references' validation HR@50."""
    from dimerec import figures

    curve_mean = curve.groupby(["model", "step", "t"], sort=False)[["HR@50", "NDCG@50"]].agg(["mean", "std"])
    curve_mean.columns = [f"{a} {b}" for a, b in curve_mean.columns]
    curve_mean = curve_mean.reset_index().fillna(0.0)
    chained = {group: [s.label for s in specs if s.label in set(curve_mean["model"])]
               for group, specs in DIFFUSION_GROUPS.items()}
    chained = {group: labels for group, labels in chained.items() if labels}
    references = {label: valid[label] for label in (CONTROL.label, SERVE_MEAN.label, POP.label) if label in valid}
    own_controls = {group: valid[OWN_CONTROL[label]] for group, labels in chained.items()
                    for label in labels if OWN_CONTROL.get(label) in valid}
    return figures.chain_panels(curve_mean, chained, references,
                                f"Reverse chains on {dataset}: HR@50 of x̂0 at each step t (validation, mean of "
                                f"seeds); dotted: validation HR@50 of the references; dashed: a lever's own control",
                                default_chain=OURS.label, own_controls=own_controls)


# What RecBole publishes for ML-1M under its leave-one-out protocol (full ranking, test): the run its hyper-parameter
# search chose on validation NDCG@10. Source: github.com/RUCAIBox/RecBole, benchmark/hyper/sequential/
# SASRec-ml-1m_seq.md (@ f2a5a034) and GRU4Rec-ml-1m_seq.md (@ 7bb55286); data and training in
# benchmark/md/ml-1m_seq.md. label -> (RecBole's best setting, {metric: test value in %}).
RECBOLE_PUBLISHED: dict[str, tuple[str, dict[str, float]]] = {
    "SASRec (RecBole's ML-1M settings)": ("learning_rate 0.0005 (of 0.0003-0.005)",
                                          {"HR@10": 24.68, "NDCG@10": 12.86, "MRR@10": 9.29}),
    "GRU4Rec (RecBole's ML-1M settings)": ("learning_rate 0.005, num_layers 2 (of 4 x 2)",
                                           {"HR@10": 27.76, "NDCG@10": 15.45, "MRR@10": 11.71}),
}

RECBOLE_MATCHED = ("leave-one-out (last item test, second-to-last validation, all users train on the rest; "
                   "`--protocol loo`), full ranking with seen items ranked, the full-softmax cross-entropy "
                   "(`--loss-kind ce`), histories of the last 50 items (`--max-len 50`), item embeddings of 64, "
                   "RecBole's chosen learning rate, validation every epoch with a patience of 10 (RecBole's "
                   "stopping_step); SASRec: 2 blocks of 2 heads, dropout 0.5, a feed-forward 256 wide with GELU "
                   "(`--ffn-dim 256 --ffn-activation gelu`); GRU4Rec: 2 layers, dropout 0.3 on the embeddings")
RECBOLE_DIFFERENT = (
    "data: RecBole's ml-1m_seq keeps ratings of 3 and above and filters 10-core (6,040 users, 3,124 items, "
    "834,449 interactions); our ML-1M file has no ratings, so every rating stays (6,040, 3,706, 1,000,209)",
    "training: RecBole trains on every prefix, each target seeing up to 50 items before it, in batches of 4,096 "
    "for up to 500 epochs (about 2.6 hours per SASRec trial, 9,322 s on RecBole's machine); ours on windows of "
    "50 items whose last 25 are targets (`--sampling windows`: a target sees 26 to 50 items before it), about 233 "
    "targets a batch, so about 17 times RecBole's optimiser steps an epoch")
RECBOLE_SELECTION = "selection: RecBole stops and selects on validation NDCG@10; ours on validation HR@50"
# The differences a row of the table measures: (the difference, the row without it, the row with it).
RECBOLE_MEASURED = (
    ("SASRec's blocks: RecBole's post-norm blocks, LayerNorm on the embeddings, normal(0, 0.02) init "
     "(`--block-style recbole`), for the official pre-norm ones, Xavier-normal init",
     "SASRec (RecBole's ML-1M settings)", "SASRec (RecBole's ML-1M settings and blocks)"),
    ("SASRec's context per target: windows whose last 10 items are targets (`--window-targets 10`: a target sees "
     "41 to 50 items before it), for 25 (26 to 50); RecBole's prefixes show each target up to 50",
     "SASRec (RecBole's ML-1M settings)", "SASRec (RecBole's ML-1M settings, 10 targets a window)"),
    ("GRU4Rec's batch: RecBole's 4,096 targets (`--batch-size 4096`, about 240 optimiser steps an epoch at "
     "RecBole's learning rate, so 4 times the epochs), for 256 (about 4,200)",
     "GRU4Rec (RecBole's ML-1M settings)", "GRU4Rec (RecBole's ML-1M settings, batches of 4,096)"),
    ("SASRec's batch: RecBole's 4,096 targets (`--batch-size 4096`, 4 times the epochs), for 256",
     "SASRec (RecBole's ML-1M settings)", "SASRec (RecBole's ML-1M settings, batches of 4,096)"),
    ("GRU4Rec's state: RecBole's 128 wide, projected to 64 (`--gru-hidden 128`), for 64 wide; both in batches of "
     "4,096", "GRU4Rec (RecBole's ML-1M settings, batches of 4,096)",
     "GRU4Rec (RecBole's ML-1M settings, batches of 4,096 and width)"),
)
for _difference, _without, _with_it in RECBOLE_MEASURED:  # a row closing one more difference: the same published run
    # (in order: a row closing two differences is the `with` of the first)
    RECBOLE_PUBLISHED[_with_it] = RECBOLE_PUBLISHED[_without]


def measured_differences(results: list[dict]) -> list[str]:
    """RECBOLE_MEASURED's effects, from the runs: mean test HR@10 and NDCG@10 with and without each difference over
    the seeds both rows have, the paired t-test where there are two seeds or more."""
    frame = pd.DataFrame(results)
    rows = []
    for difference, without, with_it in RECBOLE_MEASURED:
        hr_without, hr_with, p, n = paired(frame, without, with_it, "HR@10")
        if n == 0:
            continue
        ndcg_without, ndcg_with, _, _ = paired(frame, without, with_it, "NDCG@10")
        rows.append({"difference": difference, "seeds": n, "HR@10 without": 100 * hr_without,
                     "HR@10 with": 100 * hr_with, "effect on HR@10": f"{100 * (hr_with - hr_without):+.2f}",
                     "effect on NDCG@10": f"{100 * (ndcg_with - ndcg_without):+.2f}",
                     "paired p (HR@10)": f"{p:.3g}" if n >= 2 else "—"})
    if not rows:
        return []
    return ["", "## Differences from RecBole, measured", "",
            "Each difference as a pair of rows of the first table: test %, mean over the seeds both rows have; the "
            "effect is with the difference closed minus without.", "", *markdown_table(pd.DataFrame(rows))]


def section_loo(name, dataset, results, table, note, **_):
    """The leave-one-out table, then our HR@10, NDCG@10 and MRR@10 beside RecBole's published figures (ML-1M)."""
    lines, figure, csv_table = section_metrics(name, dataset, results, table, note)
    tests = pd.DataFrame([{"model": r["label"], **r["test"]} for r in results]).groupby("model", sort=False).mean()
    keys = ("HR@10", "NDCG@10", "MRR@10")
    rows = []
    for label in tests.index:
        setting, published = RECBOLE_PUBLISHED.get(label, ("", {}))
        row = {"model": label}
        for key in keys:
            row[f"ours {key}"] = f"{100 * tests.loc[label, key]:.2f}"
            row[f"RecBole {key}"] = f"{published[key]:.2f}" if published and dataset == "ml-1m" else "—"
        row["RecBole's chosen setting"] = setting or "—"
        rows.append(row)
    lines += ["", "## Beside RecBole's published ML-1M figures", "",
              "Ours: mean over seeds of the runs above (test, %). RecBole: the test figures its ML-1M benchmark "
              "publishes for the setting its search chose on validation (github.com/RUCAIBox/RecBole, "
              "benchmark/hyper/sequential/SASRec-ml-1m_seq.md and GRU4Rec-ml-1m_seq.md), filled on ml-1m only.",
              "", f"Matched: {RECBOLE_MATCHED}.", "", *unmatched_lines(results), "",
              *markdown_table(pd.DataFrame(rows)), *measured_differences(results)]
    return lines, figure, csv_table


def selection_gaps(results: list[dict]) -> dict[str, float]:
    """Each trained row's validation HR@10 (points, mean over its seeds) that choosing the epoch by HR@10 would add
    to the epoch chosen by HR@50 (the first best, as training keeps it): best HR@10 over the epochs minus HR@10 at
    the chosen one, from valid.csv; rows whose runs recorded no validation HR@10 are left out."""
    gaps: dict[str, list[float]] = {}
    for r in trained_results(results):
        valid = read_valid(trained_run(r))
        if valid is None or valid.empty or "HR@10" not in valid.columns:
            continue
        chosen = valid.loc[valid["HR@50"].idxmax()]  # idxmax keeps the first of equals
        gaps.setdefault(r["label"], []).append(100 * (valid["HR@10"].max() - chosen["HR@10"]))
    return {label: float(np.mean(values)) for label, values in gaps.items()}


def unmatched_lines(results: list[dict]) -> list[str]:
    """What is not matched: the data and training differences, unmeasured, and the selection metric, bounded from
    the runs' validation curves where they recorded HR@10 (RecBole's NDCG@10 is not recorded; HR@10 stands in)."""
    gaps = selection_gaps(results)
    if not gaps:
        return ["Not matched, not measured:", *[f"- {d}" for d in (*RECBOLE_DIFFERENT, RECBOLE_SELECTION)]]
    each = "; ".join(f"{label} {gap:.2f}" for label, gap in gaps.items())
    return ["Not matched, not measured:", *[f"- {d}" for d in RECBOLE_DIFFERENT], "", "Not matched, bounded:",
            f"- {RECBOLE_SELECTION}. Choosing the epoch on validation HR@10 (valid.csv records HR@10, not NDCG@10) "
            f"would raise a row's validation HR@10 by at most {min(gaps.values()):.2f} to {max(gaps.values()):.2f} "
            f"points: the best epoch's HR@10 minus the chosen epoch's, mean over seeds ({each}). A bound on "
            "validation, within the epochs trained (patience watched HR@50): a maximum over epochs flatters "
            "itself, so on test the gain would likely be smaller."]


SECTIONS = {"table1": section_table1, "table2": section_table2, "table4": section_table4, "fig4": section_fig4,
            "fig5": section_fig5, "diffusion": section_diffusion, "loo": section_loo}
