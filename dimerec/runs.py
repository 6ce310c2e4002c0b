"""The run directory: its one reader and writer. `python -m dimerec train` writes a run here; the trainer,
the CLI, `reproduce`, the app and the notebooks read it through these functions.

A run directory holds
  config.json        everything needed to rebuild the run (model, dataset, the model's and the training's configs,
                     how it is served, the data's fingerprint); read through `read_config`, which also reads
                     the files older code wrote
  losses.csv         every loss term of every step
  valid.csv          validation metrics after each evaluation
  best.pt            the best checkpoint on validation (atomic write; loaded weights_only)
  last.pt            model, optimizer, sampler and RNG state for --resume
  metrics.json       validation and test metrics of the best checkpoint (test read once)
  step_metrics.json  models that denoise: x̂0's metrics after every reverse step, on validation

A run directory is whole or absent: a run that fails before its first checkpoint leaves nothing
(`discard_failed_start`); one that fails later keeps its last checkpoint, which --resume continues.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from dimerec.data.dataset import SeqDataset, fingerprint_change
from dimerec.errors import DimeRecError
from dimerec.markdown import markdown_table
from dimerec.models.base import Recommender
from dimerec.serving import SERVING_FIELDS, ServeConfig

RUN_FILES = ("config.json", "best.pt", "losses.csv", "valid.csv", "metrics.json", "step_metrics.json")
RUNS_ENV = "DIMEREC_RUNS"
RUNS_ROOT = Path("runs")  # where runs go unless told otherwise, and the folder the app lists (else $DIMEREC_RUNS)
REPRODUCE_RUNS = RUNS_ROOT / "reproduce"  # `reproduce`'s runs: RUNS/DATASET/NAME/seedN


def runs_root() -> Path:
    """The folder whose runs the app and the notebooks list and write: $DIMEREC_RUNS, else runs/."""
    return Path(os.environ.get(RUNS_ENV) or RUNS_ROOT)


WRITTEN_FILES = (*RUN_FILES, "last.pt")  # everything a run writes (and each one's NAME.<pid>.tmp while it is written)


def finished(out: Path) -> bool:
    """Whether the run in `out` has finished (its metrics.json is written last)."""
    return (Path(out) / "metrics.json").exists()


def discover_runs(*roots: Path, max_depth: int = 6) -> dict[Path, Path]:
    """Every run directory (one holding a config.json) under each root, at most `max_depth` folders down (a tuned
    reproduction's run, RUNS/reproduce/DATASET/NAME/FLAGS/seedN, is five): {its path relative to its root: its
    path}, roots in order, each sorted."""
    found: dict[Path, Path] = {}
    for root in roots:
        if Path(root).is_dir():
            for config in sorted(Path(root).glob("**/config.json")):
                if len(config.parent.relative_to(root).parts) <= max_depth:
                    found.setdefault(config.parent.relative_to(root), config.parent)
    return found


def check_resumable(out: Path, needs_checkpoint: bool) -> None:
    """A one-line DimeRecError unless `out` holds a run that --resume can continue: its config.json and, for a
    model that trains (`needs_checkpoint`), the last.pt it continues from."""
    out = Path(out)
    if not (out / "config.json").is_file():
        what = "does not exist" if not out.exists() else "holds no run (no config.json)"
        raise DimeRecError(f"--resume: {out} {what}, so there is no run to continue; train without --resume to "
                           f"start one there")
    if needs_checkpoint and not (out / "last.pt").is_file():
        raise DimeRecError(f"--resume: {out} has no last.pt (its run wrote no checkpoint), so there is nothing to "
                           f"continue; train it again with --overwrite")


def has_checkpoint(out: Path) -> bool:
    return (Path(out) / "best.pt").is_file() or (Path(out) / "last.pt").is_file()


def discard_failed_start(out: Path, *, started: bool, created: bool) -> str:
    """After a run in `out` failed: what became of its directory, in words. A run with a checkpoint, or one this
    call did not start (--resume), keeps it, and --resume continues it; one that this call `started` and that failed
    before its first checkpoint has the files it wrote removed, and the folder too when the run `created` it and
    nothing else is in it, so no half-written run is left behind."""
    out = Path(out)
    if has_checkpoint(out) or not started:
        return f"{out} keeps its last checkpoint: continue the run with --resume --out {out}"
    for name in WRITTEN_FILES:
        for path in (out / name, *out.glob(name + ".*.tmp")):
            path.unlink(missing_ok=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    return f"it failed before its first checkpoint, so nothing of it is kept in {out}"


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills PATH.<pid>.tmp, which then replaces `path` at once: a reader sees the old file or the new.
    The temporary name carries the process id because two processes may write the same file (two `reproduce` calls
    restoring one banked run): with one shared name, the first rename leaves the second nothing to rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_atomic(obj, path: Path) -> None:
    replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(obj, path: Path) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def load_checkpoint(path: Path, needs: tuple[str, ...] = ("model",), remedy: str = "") -> dict:
    """The checkpoint at `path` (weights_only), or a one-line DimeRecError naming the file when it is
    missing, truncated, not a checkpoint, or lacks the keys `needs`; `remedy` says what to do then."""
    remedy = remedy or f"retrain the run (train --overwrite --out {Path(path).parent}) or restore the file"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DimeRecError(f"{path} is missing; {remedy}") from None
    except Exception as err:  # truncated zip, random bytes, an empty file: whatever torch.load raises
        reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:100]
        raise DimeRecError(f"{path} is not a readable checkpoint (truncated or damaged: {type(err).__name__}"
                           f"{': ' + reason if reason else ''}); {remedy}") from None
    missing = [key for key in needs if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise DimeRecError(f"{path} is not a checkpoint of `dimerec train` (no {', '.join(missing)}); {remedy}")
    return payload


def checkpoint_payload(model: Recommender, config: dict, state: dict) -> dict:
    return {"model": model.state_dict(), "config": json.dumps(config), "state": json.dumps(state),
            "data_fingerprint": json.dumps(config.get("data_fingerprint"))}


# Flags removed as unused (docs/design.md): DimeRec runs saved before still name them, at the value that did nothing.
RETIRED = {"normalize_x0": False, "confidence": False, "t_sampling": "uniform"}
SERVING_BEFORE = {**dataclasses.asdict(ServeConfig()), "guidance_weight": 0.0}  # DimeRec's config held these


def _read_run_json(path: Path) -> dict:
    """One JSON file of a run as a dict; a one-line DimeRecError naming the file when it is missing or not JSON."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise DimeRecError(f"{path} is missing: is {path.parent} a run directory written by `dimerec train`?") \
            from None
    except (OSError, ValueError) as err:
        raise DimeRecError(f"{path} is not valid JSON ({err}); retrain the run or delete the file") from None
    if not isinstance(value, dict):
        raise DimeRecError(f"{path} holds a {type(value).__name__}, not a run's record; retrain the run")
    return value


def read_config(run_dir: Path, required: bool = True) -> dict | None:
    """A run's config.json as today's code reads it, whatever code wrote it (`upgrade_config`); None when it has
    none (a served run) and not `required`, else a one-line DimeRecError naming the file when it is missing or
    not a run's."""
    path = Path(run_dir) / "config.json"
    if not required and not path.exists():
        return None
    config = _read_run_json(path)
    try:
        config["model"], config["dataset"], config["model_config"], config["train_config"]["split_seed"]
        return upgrade_config(config, path)
    except (KeyError, TypeError) as err:
        raise DimeRecError(f"{path} is not a valid run config (no {err})" if isinstance(err, KeyError)
                           else f"{path} is not a valid run config ({err})") from None


def read_metrics(run_dir: Path, required: bool = True) -> dict | None:
    """A run's metrics.json (written last: its validation and test metrics, train_minutes, epochs_trained; a served
    run's "served_from"); None when it has none and not `required`, else a one-line DimeRecError naming the file."""
    path = Path(run_dir) / "metrics.json"
    return _read_run_json(path) if required or path.exists() else None


def read_step_metrics(run_dir: Path, required: bool = True) -> dict | None:
    """A denoising run's step_metrics.json (T, "steps": x̂0's validation metrics after each reverse step, "final");
    None when it has none and not `required`, else a one-line DimeRecError naming the file."""
    path = Path(run_dir) / "step_metrics.json"
    if not required and not path.exists():
        return None
    steps = _read_run_json(path)
    if not isinstance(steps.get("steps"), list):
        raise DimeRecError(f"{path} has no list of \"steps\"; is it a step_metrics.json written by the trainer?")
    return steps


def upgrade_config(config: dict, path: Path) -> dict:
    """The one reader of config.json files that older code wrote, so no model keeps code for them:
    - serving settings (--serve, --serve-samples, --guidance-weight, ...) moved out of "model_config" into
      "serving" (dimerec.serving.ServeConfig);
    - DimeRec's retired flags (RETIRED) are dropped at the value that did nothing;
    - the control's config, written while it still took every DimeRec flag, drops those at their defaults
      under its preset (they never did anything there).
    Any such setting at another value is a one-line DimeRecError naming the file and the flag."""
    from dimerec.models import MODELS
    from dimerec.models.dimerec import DimeRecConfig, GemConfig

    model_config, serving = dict(config["model_config"]), dict(config.get("serving") or {})
    model_cls = MODELS.get(config["model"])
    if model_cls is None:
        raise DimeRecError(f"{path} is a run of model {config['model']!r}, not a known model "
                           f"(models: {', '.join(sorted(MODELS))})")
    if model_cls.denoises:
        for name in SERVING_FIELDS:  # where both hold one, "serving" is the newer record
            if name in model_config:
                serving.setdefault(name, model_config.pop(name))
    inert, why = {}, "the flag was removed as unused (docs/design.md); a run trained with it needs the code that " \
                    "trained it"
    if config["model"] == "dimerec":
        inert = RETIRED
    elif config["model"] == "dimerec-nodiff":
        reference = DimeRecConfig(preset=model_config.get("preset", "ours"))
        shared = {f.name for f in dataclasses.fields(GemConfig)}
        inert = {**RETIRED, **SERVING_BEFORE, **{f.name: getattr(reference, f.name)
                                                 for f in dataclasses.fields(DimeRecConfig) if f.name not in shared}}
        why = "dimerec-nodiff, the no-diffusion control, has no such setting: it has no diffusion"
    for name in sorted(inert.keys() & model_config.keys()):
        value = model_config.pop(name)
        if value != inert[name]:
            raise DimeRecError(f"{path}: --{name.replace('_', '-')} {value!r}: {why}")
    return {**config, "model_config": model_config, "serving": serving}


def load_run(run_dir: Path, data_dir: str | None = None, data: SeqDataset | None = None):
    """Rebuild a trained run: (model with its best weights, dataset, config.json as `read_config` gives it, its
    "serving" included: dimerec.serving.serving_of(model, config["serving"]) is how the run is served). The one
    rebuilder of a run, for the trainer, reproduce, the app and the tests. `data`: the run's dataset when the
    caller holds it already (the app caches datasets across runs); it is checked against the run's fingerprints
    all the same.
    """
    from dimerec.data import load_run_dataset
    from dimerec.models import MODELS

    run = Path(run_dir)
    if (run / "config.json").exists() and (run / "metrics.json").exists() and not (run / "best.pt").exists():
        raise DimeRecError(f"{run / 'best.pt'} is missing: the run's record came from the bank, which keeps no "
                           f"checkpoint above {CHECKPOINT_LIMIT_MB:g} MB or of a trial not chosen; to read its "
                           f"weights, delete {run} and rerun the command without --bank, which trains it again")
    for needed in ("config.json", "best.pt"):
        if not (run / needed).exists():
            raise DimeRecError(f"{run / needed} is missing: is {run} a run directory written by `dimerec train`?")
    config = read_config(run)
    model_cls = MODELS[config["model"]]
    try:
        model_config = model_cls.Config(**config["model_config"])
    except TypeError as err:
        raise DimeRecError(f"{run / 'config.json'} is not a valid run config ({err})") from None
    split_seed = config["train_config"]["split_seed"]
    if data is None:  # the run's own world (a planted world of its own size), its split seed and split
        data = load_run_dataset(config, data_dir)
    checkpoint = load_checkpoint(run / "best.pt")
    check_fingerprint(data, split_seed, {
        run / "config.json": config.get("data_fingerprint"),
        run / "best.pt": json.loads(checkpoint.get("data_fingerprint") or "null")})
    model = model_cls(data.n_items, data.max_len, model_config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:  # weights of another shape: another item count, or another model config
        reason = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line),
                      str(err).strip().splitlines()[0])
        raise DimeRecError(f"{run / 'best.pt'} does not fit the {config['model']} model that {run / 'config.json'} "
                           f"builds on {data.name} ({data.n_items} items): {reason[:160]}") from None
    model.eval()
    return model, data, config


def check_fingerprint(data: SeqDataset, split_seed: int, recorded: dict[Path, dict | None]) -> None:
    """A one-line DimeRecError when `data` is not the data whose fingerprint a file of `recorded` holds
    (file -> its fingerprint; None for runs written before fingerprints, which are not checked)."""
    now = data.fingerprint(split_seed)
    for path, fingerprint in recorded.items():
        change = fingerprint_change(fingerprint, now) if fingerprint else None
        if change:
            raise DimeRecError(f"dataset {data.name!r} ({data.source or 'as loaded'}) is not the data this run was "
                               f"trained on ({path} records another): {change}; use the data it was trained on "
                               f"(--data-dir), or train a new run")


class LossLog:
    """Appends one row per step to losses.csv; columns are fixed by the first step's terms."""

    def __init__(self, path: Path, resume: bool):
        self.path, self.columns = path, None
        if resume and path.exists():
            with open(path) as f:
                self.columns = next(csv.reader(f), None)
        self.file = open(path, "a" if resume else "w", newline="")
        self.writer = csv.writer(self.file)

    def write(self, step: int, epoch: int, terms: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["step", "epoch", *terms]
            self.writer.writerow(self.columns)
        row = {"step": step, "epoch": epoch, **terms}
        self.writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in self.columns])

    def close(self):
        self.file.close()


LESSON_FILE = "sample_or_mean.json"  # kept in a run's folder: the built-in runs carry theirs (make_default_runs.py)


def stored_lesson(run_dir: Path, model, data, config: dict, serve, max_rows: int | None = 1000) -> dict:
    """The run's sample_or_mean.json when it holds the numbers of this serving (a serving.ServeConfig), else
    explore.run_lesson computed now and written there (atomically; a read-only folder keeps nothing): the one
    writer of that file."""
    from dimerec.explore import run_lesson

    path = Path(run_dir) / LESSON_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("serving") == dataclasses.asdict(serve):
        return saved
    lesson = run_lesson(model, data, config, serve, max_rows=max_rows)
    try:
        write_json_atomic(lesson, path)
    except OSError:
        pass
    return lesson


# ---- what the app keeps beside a built-in run, made once by app/make_default_runs.py -------------------------------
# Each is tied to the best.pt it describes by that file's SHA-1: a run retrained since reads as having none.

PRESETS_FILE = "presets.json"  # the preset users, picked by what the run's chains do (explore.chain_presets)
ITEM_MAP_FILE = "item_map.npz"  # the Interests page's item map and every held-out user on it (explore.fit_item_map)


def checkpoint_sha1(run_dir: Path) -> str:
    return hashlib.sha1((Path(run_dir) / "best.pt").read_bytes()).hexdigest()


def write_presets(run_dir: Path, presets: list[tuple[int, str]], what: str) -> None:
    """PRESETS_FILE: the (user, reason) picks, `what` says how they were picked, and the best.pt they describe."""
    write_json_atomic({"what": what, "best.pt sha1": checkpoint_sha1(run_dir),
                       "presets": [{"user": int(user), "reason": reason} for user, reason in presets]},
                      Path(run_dir) / PRESETS_FILE)


def read_presets(run_dir: Path) -> list[tuple[int, str]] | None:
    """The run's (user, reason) picks; None when it has none, or an unreadable one, or one of another best.pt."""
    try:
        stored = json.loads((Path(run_dir) / PRESETS_FILE).read_text())
        if stored.get("best.pt sha1") != checkpoint_sha1(run_dir):
            return None  # retrained since: the picks describe another model
        return [(int(p["user"]), str(p["reason"])) for p in stored["presets"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_item_map(run_dir: Path, arrays: dict[str, np.ndarray]) -> int:
    """ITEM_MAP_FILE: `arrays` (compressed) and the best.pt they describe; returns the file's size in bytes."""
    path = Path(run_dir) / ITEM_MAP_FILE

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to the temporary one
            np.savez_compressed(f, **arrays, best_pt_sha1=np.str_(checkpoint_sha1(run_dir)))

    replace_atomically(path, write)
    return path.stat().st_size


def read_item_map(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The run's item map arrays; None when it has none, or an unreadable one, or one of another best.pt."""
    try:
        with np.load(Path(run_dir) / ITEM_MAP_FILE) as file:
            stored = {key: file[key] for key in file.files}
        return stored if str(stored.pop("best_pt_sha1")) == checkpoint_sha1(run_dir) else None
    except (OSError, ValueError, KeyError):
        return None


def truncate_log(path: Path, step: int) -> None:
    """Keep the header of the csv log `path` and its rows of steps up to `step` (a checkpoint's): on resume the
    steps after it are trained again, and a row cut short by a kill is dropped too."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f)) or [[]]
    if "step" not in header:
        return
    at = header.index("step")
    keep = [r for r in rows if len(r) == len(header) and r[at].isdigit() and int(r[at]) <= step]
    if len(keep) < len(rows):
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([header, *keep])
        replace_atomically(path, write)


# The bank: a committed copy of reproduce's runs, so a regeneration that takes many sessions keeps what each one
# trained (runs/ is ignored and, on these machines, not kept from one session to the next). It mirrors the runs
# folder: BANK/DATASET/NAME/seedN holds a finished run's record (its RUN_FILES, losses.csv gzipped), or an
# unfinished run's record with the last.pt that --resume continues.
BANK_ROOT = Path("bank")
# last.pt first: every file copied after it is as new or newer, and --resume cuts the logs back to its step
BANKED_FILES = ("last.pt", "config.json", "best.pt", "valid.csv", "step_metrics.json")  # metrics.json: last
GZIPPED = "losses.csv"  # banked as losses.csv.gz: the largest file (a row a step) and the one that compresses
# git holds the bank: a checkpoint above this size is banked without its weights (Bank.save). 25 MB keeps every
# checkpoint a table or the app reads (ML-1M's largest, Mult-VAE's 3,707 x 600 input and output layers, ~18 MB),
# and leaves out Mult-VAE's on YooChoose (47 MB) and KuaiRec, whose tables read only metrics.json.
CHECKPOINT_LIMIT_MB = 25.0


@dataclasses.dataclass(frozen=True)
class Bank:
    """The bank `folder` of the runs under `runs` (the same relative paths on both sides). A checkpoint above
    `checkpoint_limit_mb` stays out of it: a finished run's best.pt is left behind (its record is banked; its
    metrics.json holds test and the sampled check, all Table 1 reads), an unfinished run whose last.pt is above it
    is not banked (it resumes from the runs folder of the machine that trains it, else starts again)."""
    folder: Path
    runs: Path
    checkpoint_limit_mb: float = CHECKPOINT_LIMIT_MB

    def _too_big(self, checkpoint: Path) -> bool:
        return checkpoint.is_file() and checkpoint.stat().st_size > self.checkpoint_limit_mb * 1e6

    def of(self, run: Path) -> Path:
        """Where run `run` (a folder under `runs`) is banked."""
        return self.folder / Path(run).relative_to(self.runs)

    def save(self, run: Path) -> bool:
        """Bank run `run` if it is finished or resumable (a last.pt) and the bank lacks it or holds it less far:
        a finished run is banked once, an unfinished one again each time; a checkpoint above the limit stays
        behind (the class's note). True if something was written."""
        run, banked = Path(run), self.of(run)
        if finished(banked) or not (finished(run) or (run / "last.pt").is_file()):
            return False
        if not finished(run) and (self._too_big(run / "last.pt") or (
                (banked / "last.pt").is_file() and _last_step(banked) >= _last_step(run))):
            return False
        _copy_record(run, banked, keep_last=not finished(run), keep_best=not self._too_big(run / "best.pt"))
        _portable_paths(banked, run)
        self.write_status()
        return True

    def restore(self, under: Path | None = None, busy: Callable[[Path], bool] = lambda run: False) -> list[Path]:
        """Copy into the runs folder every banked run (under `under`, a folder of the runs folder) that it lacks:
        a finished one where the runs folder's copy is not finished, an unfinished one where it has no last.pt
        either; never a run that `busy` says a live process is training. Returns the runs restored."""
        start = self.of(under) if under is not None else self.folder
        restored = []
        for config in sorted(start.glob("**/config.json")) + sorted(start.glob("**/metrics.json")):
            run = self.runs / config.parent.relative_to(self.folder)
            if run in restored or finished(run) or busy(run):
                continue
            if finished(config.parent) or not (run / "last.pt").is_file():
                _copy_record(config.parent, run, keep_last=not finished(config.parent))
                restored.append(run)
        return restored

    def keep_record_only(self, run: Path) -> bool:
        """Drop the checkpoints of banked finished run `run` (a tuning trial that will never be chosen: its record
        is all a table reads, and a checkpoint is most of a run's size). True if something was removed."""
        banked = self.of(run)
        if not finished(banked):
            return False
        dropped = [banked / name for name in ("best.pt", "last.pt") if (banked / name).is_file()]
        for path in dropped:
            path.unlink()
        if dropped:
            self.write_status()
        return bool(dropped)

    def runs_held(self) -> list[Path]:
        """Every banked run folder, sorted."""
        held = {p.parent for name in ("config.json", "metrics.json") for p in self.folder.glob(f"**/{name}")}
        return sorted(held)

    def status(self, rows: list[dict]) -> str:
        """The bank's run count and size from its `summary` rows, and how `reproduce` gets them back: the last line
        of STATUS.md."""
        return (f"{len(rows)} run(s), {sum(r['MB'] for r in rows):.1f} MB; `reproduce --bank {self.folder}` restores "
                f"them into its --runs")

    def write_status(self, rows: list[dict] | None = None) -> Path:
        """Rewrite the bank's STATUS.md from what the bank holds now (never from a runs folder): each time a run is
        banked or cut to its record, so the page follows the bank. Atomic, since two `reproduce` processes may bank at
        once: a reader sees a whole page, and should one process's page overtake the other's newer one, the next
        save rewrites it. `rows` is this bank's summary() when the caller has just read it (it is not read twice)."""
        rows = self.summary() if rows is None else rows
        page = ["# What the bank holds", "",
                "Written by the bank each time it banks a run (`reproduce --bank`, `python -m dimerec bank`; "
                "docs/reproducing.md#the-bank): each banked run, finished or resumable, with its best validation "
                "HR@50 so far (%; no test figure is shown here); a resumable run's epochs and train min are its "
                "last validation's (it may have trained on since, to its last checkpoint). A tuning trial that was "
                f"not chosen, or a run whose checkpoint is above {self.checkpoint_limit_mb:g} MB, is kept as its "
                "record only, without checkpoints; a resumable run above it is not banked.", "",
                *markdown_table(pd.DataFrame(rows).astype(object).fillna(""), "{:g}"), "", self.status(rows), ""]
        path = self.folder / "STATUS.md"
        replace_atomically(path, lambda tmp: tmp.write_text("\n".join(page)))
        return path

    def summary(self) -> list[dict]:
        """A row per banked run: its path in the bank, its state (finished; served: it scores another run's
        checkpoint; record only: a finished trial that was not chosen, or a run whose checkpoint is above the
        limit, kept without its checkpoints; resumable), the epochs it trained,
        what stopped it, its training minutes and the device they were spent on (config.json's; none for a served
        run), its best validation HR@50 (%, from valid.csv) and its size in MB. A resumable run's epochs and minutes
        are its last validation's (valid.csv), not its last checkpoint's: reading last.pt for them would load every
        banked checkpoint each time the page is written."""
        rows = []
        for banked in self.runs_held():
            try:
                valid = read_valid(banked)
            except DimeRecError:  # a resumable run killed while writing its first row: listed with no validation
                valid = None
            last = valid.iloc[-1] if valid is not None and len(valid) else None  # its latest validation
            metrics = read_metrics(banked, required=False) or {}
            config = read_config(banked, required=False)
            device = config["train_config"].get("device", "cpu") if config else ""
            state = ("served" if "served_from" in metrics else "finished" if (banked / "best.pt").is_file()
                     else "record only") if metrics else "resumable" if (banked / "last.pt").is_file() else "incomplete"
            rows.append({"run": str(banked.relative_to(self.folder)), "state": state,
                         "epochs": metrics.get("epochs_trained", None if last is None else int(last["epoch"])),
                         "stopped by": metrics.get("stopped_by", ""),
                         "train min": round(float(metrics.get("train_minutes", 0 if last is None
                                                               else last["train_minutes"])), 1),
                         "device": device,
                         "best valid HR@50": None if last is None else round(100 * float(valid["HR@50"].max()), 2),
                         "MB": round(sum(f.stat().st_size for f in banked.iterdir() if f.is_file()) / 1e6, 2)})
        return rows


def _read_run_csv(path: Path, required: bool) -> pd.DataFrame | None:
    """One csv log of a run as a frame; None when it is absent and not `required`, else a one-line DimeRecError
    naming the file when it is missing, unreadable or not the trainer's (no "step" column)."""
    if not required and not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DimeRecError(f"{path} is missing: is {path.parent} a run directory written by `dimerec train`?") \
            from None
    except (OSError, ValueError) as err:
        raise DimeRecError(f"{path} cannot be read ({err}); retrain the run or delete the file") from None
    if "step" not in frame.columns:
        raise DimeRecError(f"{path} has no 'step' column; is it a {path.name} written by the trainer?")
    return frame


def read_losses(run_dir: Path, required: bool = True) -> pd.DataFrame | None:
    """A run's losses.csv: a row a training step (step, epoch, each loss term); None when it has none and not
    `required`. Errors as `_read_run_csv`."""
    return _read_run_csv(Path(run_dir) / "losses.csv", required)


def read_valid(run_dir: Path, required: bool = False) -> pd.DataFrame | None:
    """A run's valid.csv: a row a validation (epoch, step, train_minutes, HR@50, ...); None when it has none yet
    and not `required`. Errors as `_read_run_csv`."""
    return _read_run_csv(Path(run_dir) / "valid.csv", required)


def served_source(served: Path, served_from: str) -> Path:
    """The run whose checkpoint the served run `served` scores. `served_from` is written relative to the served
    run's own folder, so a runs folder (or the bank's copy of it) can move; runs served before that recorded it
    relative to the working directory, which is where it is looked for when the relative reading finds no run."""
    beside = Path(os.path.normpath(served / served_from))
    return beside if (beside / "config.json").is_file() else Path(served_from)


def _portable_paths(banked: Path, run: Path | None = None) -> None:
    """The bank is committed: the data folder a run recorded as an absolute path of this machine (config.json, and
    the config inside its checkpoints) is written relative to the working directory, the repository's root; a
    served run's source, where an older record named it from the working directory, is written relative to the
    served run's own folder (`run`, its place in the runs folder), so that the bank restores into any runs folder."""
    if run is not None and finished(banked):
        metrics = read_metrics(banked)
        named = metrics.get("served_from")
        source = served_source(run, named) if named else None
        if source is not None and (source / "config.json").is_file() and os.path.relpath(source, run) != named:
            write_json_atomic({**metrics, "served_from": os.path.relpath(source, run)}, banked / "metrics.json")
    try:
        data_dir = _read_run_json(banked / "config.json").get("data_dir")
    except DimeRecError:
        return
    if not data_dir or not os.path.isabs(data_dir):
        return
    old, new = json.dumps(data_dir)[1:-1], json.dumps(os.path.relpath(data_dir))[1:-1]
    text = (banked / "config.json").read_text().replace(old, new)
    replace_atomically(banked / "config.json", lambda tmp: tmp.write_text(text))
    for name in ("best.pt", "last.pt"):
        if (banked / name).is_file():
            payload = torch.load(banked / name, map_location="cpu", weights_only=True)
            if isinstance(payload.get("config"), str):
                save_atomic({**payload, "config": payload["config"].replace(old, new)}, banked / name)


def _last_step(run: Path) -> int:
    """The step of the run's last.pt (its state), 0 when unreadable."""
    try:
        return int(json.loads(load_checkpoint(run / "last.pt", needs=("state",))["state"]).get("step", 0))
    except (DimeRecError, ValueError, TypeError):
        return 0


def _copy_record(source: Path, target: Path, keep_last: bool, keep_best: bool = True) -> None:
    """Copy a run's record from `source` to `target` (a run folder to its banked one, or back: losses.csv is
    gzipped on the way into the bank and unzipped on the way out), every file atomically and metrics.json last, so
    `target` is finished only once whole. `keep_last`: an unfinished run's last.pt travels too; a finished one's
    does not, and `target`'s is removed. `keep_best`: best.pt travels, else `target`'s is removed (a checkpoint above
    the bank's limit)."""
    import gzip
    import shutil

    def gzip_to(plain: Path, tmp: Path) -> None:  # mtime 0: the same losses give the same bytes
        with open(plain, "rb") as f_in, open(tmp, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as f_out:
            shutil.copyfileobj(f_in, f_out)

    def gunzip_to(zipped: Path, tmp: Path) -> None:
        with gzip.open(zipped, "rb") as f_in, open(tmp, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)

    target.mkdir(parents=True, exist_ok=True)
    for name in BANKED_FILES:
        if (source / name).is_file() and (keep_last or name != "last.pt") and (keep_best or name != "best.pt"):
            replace_atomically(target / name, lambda tmp: shutil.copyfile(source / name, tmp))
    if (source / GZIPPED).is_file():  # into the bank
        replace_atomically(target / (GZIPPED + ".gz"), lambda tmp: gzip_to(source / GZIPPED, tmp))
    elif (source / (GZIPPED + ".gz")).is_file():  # out of it
        replace_atomically(target / GZIPPED, lambda tmp: gunzip_to(source / (GZIPPED + ".gz"), tmp))
    if not keep_last:
        (target / "last.pt").unlink(missing_ok=True)
    if not keep_best:
        (target / "best.pt").unlink(missing_ok=True)
    if (source / "metrics.json").is_file():
        replace_atomically(target / "metrics.json", lambda tmp: shutil.copyfile(source / "metrics.json", tmp))
