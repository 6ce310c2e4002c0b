"""`python -m dimerec reproduce NAME --dataset D`: train a set of models over seeds, test once, tabulate.

Runs go to `runs/reproduce/<dataset>/<run name>/seed<N>/`; a run whose metrics.json
exists is skipped, so an interrupted reproduction resumes where it stopped, and
experiments that share a configuration share its runs (Table 4's full model is
the DimeRec row of the `dimerec` experiment, Fig. 4 reads Table 4's runs, ...).
Every table (`results/<name>_<dataset>.md` and `.csv`) gives mean ± std over seeds
of the test metrics, names the protocol and the budget, and, where the experiment
has baselines, compares DimeRec with the best of them by a paired t-test over seeds.
Every experiment also writes a figure (`.png` and interactive `.html`).

With `--tune`, each model first gets the same small grid search on validation
(learning rate and at most two of its own settings, `TUNING`), on seed 0, with the
same budget, without reading the test split; the final runs use the best setting, and a model's
seeds start as soon as its own grid is done (in one queue with the other models' trials).

The package, each module importing only those before it: `experiments` (the catalogue: every experiment's rows,
descriptions and the tuning grid) → `runner` (budget, tuning, locks, training and serving the runs) → `tables`
(summaries, the written tables and figures, each experiment's section) → here, `reproduce`, one experiment
from its runs to its table.
"""
from __future__ import annotations

from pathlib import Path

from dimerec.errors import DimeRecError
from dimerec.markdown import markdown_table
from dimerec.runs import REPRODUCE_RUNS, Bank
from dimerec.reproduce.experiments import (DESCRIPTIONS, DIFFUSION_GROUPS, EXPERIMENTS, OURS, TUNING, RunSpec,
                                           grid)
from dimerec.reproduce.runner import (_LOADED, Budget, FinalRuns, Job, RunLock, Tuning, minutes_left,
                                      train_all, tune)
from dimerec.reproduce.tables import SECTIONS, device_note, section_metrics, summarize, write_outputs

__all__ = ["reproduce", "DESCRIPTIONS", "DIFFUSION_GROUPS", "EXPERIMENTS", "OURS", "TUNING", "RunSpec", "grid",
           "Budget", "Job", "RunLock", "minutes_left", "train_all", "tune", "device_note"]


def reproduce(name: str, dataset: str, seeds: int, *, data_dir: str | None, max_minutes: float,
              max_steps: int | None = None, final_max_rows: int | None = None, max_epochs: int | None = None,
              patience: int | None = None, root: Path = REPRODUCE_RUNS,
              out_dir: Path = Path("results"),
              extra_flags: list[str] | None = None, tune_grid: bool = False,
              tune_minutes: float | None = None, analysis_rows: int | None = None,
              command: str | None = None, skip_models: tuple[str, ...] = (), skip_runs: tuple[str, ...] = (),
              device: str = "cpu", bank: Path | None = None) -> Path:
    """Train (or reuse) the runs of experiment `name` and write its table; `bank`: a folder of banked runs
    (runs.Bank) restored into `root` first and added to as each run finishes."""
    from dimerec.trainer import check_device

    if name not in EXPERIMENTS:
        raise DimeRecError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    check_device(device)  # before any run starts
    _LOADED.clear()
    known = sorted({spec.model for spec in EXPERIMENTS[name]})
    unknown = [m for m in skip_models if m not in known]
    if unknown:  # a misspelt name would otherwise train the model it meant to skip
        raise DimeRecError(f"--skip-models: {', '.join(map(repr, unknown))}: no such model in {name}; "
                           f"its models are {', '.join(known)}")
    slugs = [spec.slug for spec in EXPERIMENTS[name]]
    unknown = [r for r in skip_runs if r not in slugs]
    if unknown:
        raise DimeRecError(f"--skip-runs: {', '.join(map(repr, unknown))}: no such run in {name}; "
                           f"its runs are {', '.join(dict.fromkeys(slugs))}")
    by_label = {spec.label: spec for spec in EXPERIMENTS[name]}

    def left_out(spec) -> bool:  # a row served from a skipped run's checkpoints is skipped with it
        source = by_label.get(spec.serve_of) if spec.serve_of else None
        return spec.model in skip_models or spec.slug in skip_runs or (source is not None and left_out(source))

    skipped = [spec.label for spec in EXPERIMENTS[name] if left_out(spec)]
    specs = [spec for spec in EXPERIMENTS[name] if not left_out(spec)]
    extra_flags = [*(extra_flags or []), *(["--device", device] if device != "cpu" else [])]
    sections = []
    if skipped:
        flags = " and ".join(f"`{f}`" for f, given in (("--skip-models", skip_models), ("--skip-runs", skip_runs))
                             if given)
        sections = [f"Not run ({flags}): {', '.join(skipped)}.", ""]
    budget = Budget(max_minutes, max_steps, final_max_rows, max_epochs, patience)
    banked = Bank(Path(bank), Path(root)) if bank is not None else None
    if banked is not None:  # before the budget checks: a banked run is reused (or resumed) as if trained here
        for under in (root / dataset, root / "tuned" / dataset):
            banked.restore(under, busy=lambda run: RunLock(run).held())  # never under a live run's feet
    jobs, tuning = [], None
    choice, reuse = (lambda spec: []), (lambda spec: None)
    if tune_grid:
        tune_budget = Budget(tune_minutes or max_minutes, max_steps, final_max_rows, max_epochs, patience)
        tuning = Tuning(specs, dataset, data_dir=data_dir, root=root / "tuned", budget=tune_budget,
                        extra_flags=extra_flags, bank=banked)
        jobs, choice = tuning.jobs(), tuning.choice
        if tune_budget == budget:
            def reuse(spec: RunSpec) -> Path | None:  # the chosen trial is the final run's seed 0
                return tuning.run(spec, flags) if (flags := tuning.choice(spec)) is not None else None
        root = root / "tuned"
    final = FinalRuns(specs, dataset, list(range(seeds)), data_dir=data_dir, root=root, budget=budget,
                      extra_flags=extra_flags, choice=choice, reuse=reuse, device=device)
    # one queue: a model's seeds start as soon as its own grid is done, while other grids still train (here or in
    # a process beside this one)
    train_all(jobs + final.jobs(), desc="reproduce", bank=banked)
    if tuning is not None:
        _, trials = tuning.result()
        sections += ["## Tuning (validation HR@50, seed 0, no test read)", "", *markdown_table(trials), ""]
        out_dir.mkdir(parents=True, exist_ok=True)
        trials.to_csv(out_dir / f"{name}_{dataset}_tuning.csv", index=False)
    results = final.results()
    table, note = summarize(results)
    section = SECTIONS.get(name, section_metrics)
    lines, figure, csv_table = section(name, dataset, results, table, note, data_dir=data_dir,
                                       max_rows=analysis_rows)
    command = command or f"python -m dimerec reproduce {name} --dataset {dataset} --seeds {seeds} " + \
        " ".join(budget.flags())
    return write_outputs(name, dataset, results, csv_table, [*lines, "", *sections], figure, out_dir, command,
                         budget, tuned=tune_grid)
