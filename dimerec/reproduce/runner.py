"""Producing an experiment's runs: the budget every run gets, `--tune`'s grid search on validation, the locks that
let reproductions side by side share a runs folder, and training or serving each run (a finished run is reused)."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dimerec.errors import DimeRecError
from dimerec.processes import start_time
from dimerec.reproduce.experiments import RunSpec, grid
from dimerec.runs import Bank, finished, read_config, read_metrics, read_valid, served_source

# How a table's budget line names validation patience; a table whose line holds it was trained to convergence.
PATIENCE_STOP = "validations without a better HR@50"


def _train(argv: list[str], out: Path) -> None:
    """Train one run as `python -m dimerec ARGV` would (ARGV starts with "train"), through dimerec.options."""
    from dimerec.options import train_from_argv

    assert argv[0] == "train", argv
    try:
        train_from_argv(argv[1:])
    except SystemExit as exit_:  # argparse's one-line error for a bad flag in an experiment's spec
        raise DimeRecError(f"run {out}: its flags {' '.join(argv[1:])} were refused") from exit_
    except DimeRecError as err:
        # The inner error names its own remedy (a flag, the data); the runs finished before this one are kept.
        raise DimeRecError(f"run {out} failed: {err} (once that is mended, a rerun goes on from this run; the "
                           f"finished ones are kept)") from None


@dataclass
class Budget:
    """What every run of an experiment gets: at most `epochs` passes over its training targets with early stopping
    after `patience` validations (one an epoch) without a better HR@50, a wall clock as a safety net (`minutes`,
    optionally a step cap), and the rows its final metrics are computed on (all, or a seeded subsample shared by
    every model of a seed). `epochs` and `patience` None: the trainer's own (budgets written before epochs were)."""
    minutes: float
    steps: int | None = None
    final_rows: int | None = None
    epochs: int | None = None
    patience: int | None = None

    def scaled(self, factor: int) -> "Budget":
        """The budget `factor` times as long (clock, step cap and epochs; the scored rows and patience stay)."""
        return self if factor == 1 else replace(self, minutes=self.minutes * factor,
                                                steps=self.steps * factor if self.steps else None,
                                                epochs=self.epochs * factor if self.epochs else None)

    def of(self, spec: RunSpec) -> "Budget":
        """The budget a row trains under: scaled by its budget_scale, with its own patience where it has one."""
        scaled = self.scaled(spec.budget_scale)
        return replace(scaled, patience=spec.patience) if spec.patience else scaled

    def flags(self) -> list[str]:
        return ((["--max-epochs", str(self.epochs)] if self.epochs else [])
                + (["--patience", str(self.patience)] if self.patience else [])
                + ["--max-minutes", str(self.minutes)] + (["--max-steps", str(self.steps)] if self.steps else [])
                + (["--final-max-rows", str(self.final_rows)] if self.final_rows else []))

    def __str__(self) -> str:
        text = (f"trained for at most {self.epochs} epochs, stopped after {self.patience or 'the default'} "
                f"{PATIENCE_STOP}, within " if self.epochs else "trained for at most ")
        text += f"{self.minutes:g} minutes" + (f" and {self.steps} steps" if self.steps else "")
        return text + (f", scored on {self.final_rows} sampled rows" if self.final_rows else "")

    def as_run(self, train_config: dict) -> "Budget":
        """The budget a run's recorded train_config (config.json) trained it under, in this budget's terms: its
        epochs and patience only where this budget has them (older budgets had neither)."""
        return Budget(train_config.get("max_minutes"), train_config.get("max_steps"),
                      train_config.get("final_max_rows"), train_config.get("max_epochs") if self.epochs else None,
                      train_config.get("patience") if self.patience else None)

    def check(self, out: Path) -> None:
        """A finished run is reused only if this budget would train it the same (a served run: its source's):
        the same epochs, patience, step cap and scored rows, and the same wall clock, or a longer one where the run
        stopped before its clock ran out (then it stopped on its steps, epochs or on validation, and a longer clock
        trains it identically)."""
        if not (out / "config.json").exists():
            out = served_source(out, read_metrics(out)["served_from"])
        had = self.as_run(read_config(out)["train_config"])
        trained_minutes = read_metrics(out)["train_minutes"]
        longer_clock = had.minutes is not None and (self.minutes is None or self.minutes > had.minutes)
        stopped_before_clock = had.minutes is None or trained_minutes < had.minutes
        if had != self and not (replace(had, minutes=self.minutes) == self and longer_clock and stopped_before_clock):
            raise DimeRecError(f"{out} was {had}, not {self}; a run is reused under the same budget (or a longer "
                               f"--max-minutes, if it stopped before its clock), else use another --runs folder")


def train_flags(dataset: str, seed: int, out: Path, budget: Budget, data_dir: str | None,
                extra: list[str]) -> list[str]:
    """The flags of one run's `train`: it continues (--resume) a run that a stopped `reproduce` left unfinished
    under the same epochs and patience, else starts afresh (--overwrite)."""
    argv = ["--dataset", dataset, "--seed", str(seed), "--out", str(out), *budget.flags(),
            "--quiet", "--resume" if unfinished_under(out, budget) else "--overwrite", *extra]
    return argv + (["--data-dir", data_dir] if data_dir else [])


def unfinished_under(out: Path, budget: Budget) -> bool:
    """Whether `out` holds a run stopped before it finished (its last.pt, no metrics.json) that trained under
    `budget`'s epochs and patience: the long runs of a regeneration span sessions and resume where they stopped."""
    if finished(out) or not (out / "last.pt").is_file() or not (out / "config.json").is_file():
        return False
    try:
        recorded = read_config(out)["train_config"]
    except DimeRecError:
        return False
    return (recorded.get("max_epochs"), recorded.get("patience")) == (budget.epochs, budget.patience)


def load_run_cached(run: Path, data_dir: str | None, overrides: dict | None = None):
    """runs.load_run, once per run within one `reproduce` call (Table 2 reads each run twice; reproduce() empties
    the cache when it starts): (model, data, config, serve), `serve` the run's recorded serving with `overrides`
    (a served row's serving changes, dimerec.serving.ServeConfig fields) applied and checked."""
    from dimerec.runs import load_run
    from dimerec.serving import serving_of

    key = (str(run), data_dir)
    if key not in _LOADED:
        _LOADED[key] = load_run(run, data_dir)
    model, data, config = _LOADED[key]
    return model, data, config, serving_of(model, {**config["serving"], **(overrides or {})})


_LOADED: dict[tuple, tuple] = {}


def trained_run(result: dict) -> Path:
    """The directory holding a result's weights and training logs (a served run's source); a trained run has no
    `served_from`."""
    if served_from := result.get("served_from"):
        return served_source(Path(result["run"]), served_from)
    return Path(result["run"])


def serve_run(source: Path, out: Path, overrides: dict, data_dir: str | None, device: str = "cpu") -> None:
    """metrics.json of `source`'s checkpoint served with `overrides` (same weights, same rows), scored on `device`."""
    from dimerec.runs import write_json_atomic
    from dimerec.trainer import attention_kernels, check_device, final_metrics, sampled_test

    model, data, config, serve = load_run_cached(source, data_dir, overrides)
    try:
        on = check_device(device)
        model.to(on)
        with attention_kernels(on):
            valid, test = final_metrics(model, data, config["train_config"], serve)  # the rows the source was scored on
            sampled = sampled_test(model, data, config["train_config"], serve)
    finally:
        model.cpu()  # the cached model stays on the CPU for the tables' analyses
    trained = read_metrics(source)
    metrics = {**trained, "served_from": os.path.relpath(source, out), "serve_overrides": overrides,
               "valid": valid, "test": test, "sampled_test": sampled}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, out / "metrics.json")


def flags_slug(flags: list[str]) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", " ".join(flags).lower()).strip("-")


def tuning_run(root: Path, dataset: str, spec: RunSpec, flags: list[str]) -> Path:
    return root / dataset / "tune" / spec.slug / flags_slug(flags)


def choose(trials: pd.DataFrame) -> dict[str, list[str]]:
    """Each model's chosen setting among `trials` (rows in grid order: model, setting, valid HR@50): the highest
    validation HR@50, the earlier in its grid on a tie. A trial this rule passes over among some finished trials it
    passes over among any that include them, which is what lets the bank drop a trial's checkpoints before its grid
    is complete (`tune`)."""
    return {model: mine.loc[mine["valid HR@50"].idxmax(), "setting"].split()
            for model, mine in trials.groupby("model", sort=False)} if len(trials) else {}


def validated_so_far(out: Path, budget: Budget) -> float | None:
    """The best validation HR@50 (a fraction) so far of run `out`, stopped or still training under `budget`, where
    its final validation HR@50 can only be at least that: it goes on from its last.pt (`unfinished_under`), and it
    validates on the rows of its final validation, which reuses best.pt's (trainer.score_and_record). None for any
    other run (finished, to start afresh, validated on other rows) or one with no validation yet."""
    from dimerec.trainer import final_valid_is_best_valid

    if not unfinished_under(out, budget):
        return None
    try:
        train_config, valid = read_config(out)["train_config"], read_valid(out)
    except DimeRecError:  # a run killed while writing its first row: nothing to go on
        return None
    if valid is None or not len(valid) or not final_valid_is_best_valid(train_config):
        return None
    return float(valid["HR@50"].max())


class Tuning:
    """Grid search on validation HR@50 (seed 0, no test read): each model's trials as jobs, and its chosen setting as
    soon as its own grid is finished, so that its seeds can start while other models' grids still train (`choice`).
    In `bank`, a finished trial that `choose` passes over keeps only its record (runs.Bank.keep_record_only), so a
    model's grid costs the bank one checkpoint; so does one that a trial still training has already validated above
    (`validated_so_far`), since that trial will end above it."""

    def __init__(self, specs: list[RunSpec], dataset: str, *, data_dir: str | None, root: Path, budget: Budget,
                 extra_flags: list[str], bank: Bank | None = None):
        self.specs = [spec for spec in specs if spec.serve_of is None]  # a served row has nothing to tune
        self.dataset, self.data_dir, self.root, self.budget = dataset, data_dir, root, budget
        self.extra_flags, self.bank = extra_flags, bank
        self.trials = [(spec, flags) for spec in self.specs for flags in grid(spec.model)]
        self.chosen: dict[str, list[str]] = {}  # a finished grid's choice is final: read its trials once
        for spec, flags in self.trials:  # a finished run is reused only if it had this budget
            if finished(out := self.run(spec, flags)):
                budget.check(out)

    def run(self, spec: RunSpec, flags: list[str]) -> Path:
        return tuning_run(self.root, self.dataset, spec, flags)

    def grid_of(self, spec: RunSpec) -> list[tuple[RunSpec, list[str]]]:
        return [(s, flags) for s, flags in self.trials if s is spec]

    def table(self, trials: list[tuple[RunSpec, list[str]]]) -> pd.DataFrame:
        """The finished ones among `trials`, in grid order."""
        rows = []
        for spec, flags in trials:
            if finished(out := self.run(spec, flags)):
                valid = read_metrics(out)["valid"]
                rows.append({"model": spec.label, "setting": " ".join(flags), "valid HR@50": 100 * valid["HR@50"],
                             "valid NDCG@50": 100 * valid["NDCG@50"]})
        return pd.DataFrame(rows)

    def choice(self, spec: RunSpec) -> list[str] | None:
        """`spec`'s chosen flags once every trial of its grid has finished (here or in a process beside this one),
        None before; [] for a row with no grid (a served row, MostPopular's one empty setting)."""
        if spec.label in self.chosen:
            return self.chosen[spec.label]
        mine = self.grid_of(spec)
        if not mine:
            return []
        if not all(finished(self.run(s, flags)) for s, flags in mine):
            return None
        self.chosen[spec.label] = choose(self.table(mine))[spec.label]
        return self.chosen[spec.label]

    def prune(self, spec: RunSpec) -> None:
        mine = self.grid_of(spec)
        kept = choose(self.table(mine)).get(spec.label)
        if kept is None:  # no finished trial yet: nothing to pass over
            return
        outs = [self.run(spec, flags) for _, flags in mine]
        # a trial still training (here or in a process beside this one) whose validation is already above a finished
        # trial's will end above it too, so `choose` can never pick that finished trial
        running_best = max((b for out in outs if (b := validated_so_far(out, self.budget)) is not None),
                           default=-np.inf)
        for (_, flags), out in zip(mine, outs):
            if finished(out) and (flags != kept or read_metrics(out)["valid"]["HR@50"] < running_best):
                self.bank.keep_record_only(out)

    def jobs(self) -> list[Job]:
        def trial(spec: RunSpec, flags: list[str]) -> Job:
            out = self.run(spec, flags)
            argv = ["train", "--model", spec.model, *spec.flags, *flags,
                    *train_flags(self.dataset, 0, out, self.budget, self.data_dir,
                                 ["--no-read-test", *self.extra_flags])]
            return Job(out, lambda: _train(argv, out), f"{spec.label}, {' '.join(flags)}", model=cost_model(spec),
                       then=(lambda: self.prune(spec)) if self.bank is not None else None)

        return [trial(spec, flags) for spec, flags in self.trials]

    def result(self) -> tuple[dict[str, list[str]], pd.DataFrame]:
        """Once every trial has finished: the chosen flags per label, and all trials (with a `chosen` column)."""
        for spec in self.specs if self.bank is not None else ():  # trained elsewhere too
            self.prune(spec)
        trials = self.table(self.trials)
        chosen = choose(trials)
        if len(trials):
            trials["chosen"] = [chosen.get(r.model) == r.setting.split() for r in trials.itertuples()]
        return chosen, trials


def tune(specs: list[RunSpec], dataset: str, *, data_dir: str | None, root: Path, budget: Budget,
         extra_flags: list[str], bank: Bank | None = None) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """Train every trial of the grid (`Tuning`); returns the chosen flags per label, and all trials."""
    tuning = Tuning(specs, dataset, data_dir=data_dir, root=root, budget=budget, extra_flags=extra_flags, bank=bank)
    train_all(tuning.jobs(), desc="tuning", bank=bank)
    return tuning.result()


class RunLock:
    """`out/../seedN.lock` while a process trains run `out`, so reproductions running side by side share a runs
    folder: a run locked by a live process is passed over, not trained twice; a dead process's lock is taken over.
    The lock holds the owner's pid and start time, so a pid reused by another process (a new machine) is not
    mistaken for the owner."""

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".lock")

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if self._owner_alive():
                return False
            self.path.unlink(missing_ok=True)  # a stale lock
            return self.acquire()
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {start_time(os.getpid()) or ''}")
        return True

    def _owner_alive(self) -> bool:
        try:
            text = self.path.read_text()
            if not text:  # its owner is between creating and writing it, unless that was long ago
                return time.time() - self.path.stat().st_mtime < 60
            pid, *started = text.split()
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError, FileNotFoundError):
            return False
        except PermissionError:  # alive, another user's
            return True
        return not started or start_time(int(pid)) in (None, started[0])

    def held(self) -> bool:
        """Whether a live process holds the lock (is training the run) now."""
        return self.path.exists() and self._owner_alive()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class Job:
    """One run to produce: `train` writes `out/metrics.json`; `after` is a run that must finish first
    (a serving variant's source); `model` names the runs whose mean duration estimates this one's (None: a run
    only served, which costs next to nothing); `then` runs once this call has finished (and banked) it."""
    out: Path
    train: Callable[[], None]
    label: str
    model: str | None = None
    after: Path | None = None
    then: Callable[[], None] | None = None


@dataclass
class Later:
    """A run that cannot be named yet: `make` returns its Job once it can (a tuned model's seed, whose folder names
    the setting its grid chose, once that grid is finished), None until then; `model` as Job's."""
    make: Callable[[], Job | None]
    model: str | None = None


def train_all(jobs: list[Job | Later], desc: str, poll_seconds: float = 5.0, bank: Bank | None = None) -> None:
    """Produce every job's run, in order, unless it is finished. A run that another live process is training
    (or whose `after` run is not finished, or a Later not yet nameable) is passed over and come back to, so
    reproductions started side by side share the work instead of queueing on one run. Runs begun earlier (a last.pt:
    a stopped command's, or one the bank restored) go first, so a regeneration spanning sessions finishes what it
    started before it starts more. Each run this call finishes goes into `bank` (runs.Bank) at once. Returns when
    every run is finished."""
    bar = tqdm(total=len(jobs), desc=desc, unit="run")
    durations: dict[str, list[float]] = {}
    pending = [job.make() or job if isinstance(job, Later) else job for job in jobs]  # those nameable now
    pending.sort(key=lambda job: isinstance(job, Later) or finished(job.out)
                 or not (job.out / "last.pt").is_file())  # stable
    done: list[Job] = []
    while pending:
        deferred = []
        for item in pending:
            job = item.make() if isinstance(item, Later) else item
            if job is None:
                deferred.append(item)
                continue
            if not finished(job.out):
                lock = RunLock(job.out)
                if (job.after is not None and not finished(job.after)) or not lock.acquire():
                    deferred.append(job)
                    continue
                bar.set_description(job.label)
                started = time.perf_counter()
                try:
                    if not finished(job.out):
                        job.train()
                    if bank is not None:
                        bank.save(job.out)
                    if job.then is not None:
                        job.then()
                finally:
                    lock.release()
                if job.model is not None:
                    durations.setdefault(job.model, []).append(time.perf_counter() - started)
                    left = pending[pending.index(item) + 1:] + deferred
                    bar.set_postfix_str(f"~{minutes_left(left, durations):.0f} min left")
            done.append(job)
            bar.update()
        if len(deferred) == len(pending):  # nothing could start: wait for the other processes
            time.sleep(poll_seconds)
        pending = deferred
    bar.close()
    for job in done if bank is not None else ():  # runs finished before this call (without a bank) too
        bank.save(job.out)


def minutes_left(jobs: list[Job | Later], durations: dict[str, list[float]]) -> float:
    """Estimated minutes for the jobs still to train: each at its model's mean duration so far (the mean of all
    trained runs for a model not yet seen); finished runs and runs only served cost nothing."""
    overall = np.mean([d for ds in durations.values() for d in ds])
    return sum(np.mean(durations.get(job.model, [overall])) for job in jobs
               if job.model is not None and (isinstance(job, Later) or not finished(job.out))) / 60


def cost_model(spec: RunSpec) -> str | None:
    """The name whose runs' durations estimate this spec's (its label); None for a model with nothing to train
    (MostPopular), whose instant runs would otherwise drag the estimate for models not yet seen towards zero."""
    from dimerec.models import MODELS

    return spec.label if MODELS[spec.model].trainable else None


class FinalRuns:
    """Every spec at every seed, trained or reused. `choice(spec)` gives the flags a tuned spec's runs train with
    (their folder names them: a new choice never reuses an old run), [] for none, None while its grid is still
    training; `reuse(spec)` the tuning run that trained its seed 0 with those flags and the same budget, scored on
    test instead of trained again (when it holds its weights), or None. `device` scores the served runs
    (extra_flags's --device trains the others)."""

    def __init__(self, specs: list[RunSpec], dataset: str, seeds: list[int], *, data_dir: str | None, root: Path,
                 budget: Budget, extra_flags: list[str], choice: Callable[[RunSpec], list[str] | None],
                 reuse: Callable[[RunSpec], Path | None], device: str = "cpu"):
        self.specs, self.dataset, self.seeds, self.data_dir, self.root = specs, dataset, seeds, data_dir, root
        self.budget, self.extra_flags, self.choice, self.reuse, self.device = budget, extra_flags, choice, reuse, device
        # a serving variant needs its source trained first
        self.runs = sorted([(spec, seed) for spec in specs for seed in seeds],
                           key=lambda run: run[0].serve_of is not None)
        self.source_of = {spec.label: next(s for s in specs if s.label == spec.serve_of)
                          for spec in specs if spec.serve_of is not None}

    def run_dir(self, spec: RunSpec, seed: int) -> Path | None:
        """The run's folder, None while its (source's) setting is still being chosen."""
        if (source := self.source_of.get(spec.label)) is not None and self.run_dir(source, seed) is None:
            return None
        flags = self.choice(spec)
        if flags is None:
            return None
        folder = self.root / self.dataset / spec.slug
        return (folder / flags_slug(flags) if flags else folder) / f"seed{seed}"

    def job(self, spec: RunSpec, seed: int) -> Job | None:
        """The run's Job, None while it cannot be named (`run_dir`); a finished run is reused only if it had this
        budget."""
        if (out := self.run_dir(spec, seed)) is None:
            return None
        label = f"{spec.label}, seed {seed}"
        if spec.serve_of is not None:
            source = self.run_dir(self.source_of[spec.label], seed)
            return Job(out, lambda: serve_run(source, out, spec.serve_overrides, self.data_dir, self.device), label,
                       after=source)
        if finished(out):
            self.budget.of(spec).check(out)
        # the chosen tuning run is this very run, test unread; one whose weights the bank left out (runs.Bank) is
        # trained again at seed 0 instead: the same flags, seed and budget
        if seed == 0 and (tuned := self.reuse(spec)) is not None and (tuned / "best.pt").is_file():
            return Job(out, lambda: serve_run(tuned, out, {}, self.data_dir, self.device), label)
        argv = ["train", "--model", spec.model, *spec.flags, *self.choice(spec),
                *train_flags(self.dataset, seed, out, self.budget.of(spec), self.data_dir, self.extra_flags)]
        return Job(out, lambda: _train(argv, out), label, model=cost_model(spec))

    def jobs(self) -> list[Later]:
        return [Later(lambda spec=spec, seed=seed: self.job(spec, seed),
                      model=None if spec.serve_of is not None else cost_model(spec)) for spec, seed in self.runs]

    def results(self) -> list[dict]:
        """Once every run has finished: one dict a run (label, role, seed, run folder, its metrics), in the specs'
        order."""
        results = []
        for spec, seed in self.runs:
            out = self.run_dir(spec, seed)
            results.append({"label": spec.label, "role": spec.role, "seed": seed, "run": str(out),
                            **read_metrics(out)})
        order = {spec.label: i for i, spec in enumerate(self.specs)}
        return sorted(results, key=lambda r: (order[r["label"]], r["seed"]))

