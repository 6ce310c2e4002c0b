"""One training loop for every model: Adam, seeded, early stopping on validation HR@50.
`train_model(name, dataset, **settings)` is `python -m dimerec train` as a function.

The run directory it writes (config.json, losses.csv — cut back to the checkpoint's step on --resume —,
valid.csv, best.pt, last.pt — each validation and every --checkpoint-every steps —, metrics.json,
step_metrics.json) is read and written through dimerec.runs, its one owner.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from dimerec import distributed
from dimerec.data.dataset import Sampling, SeqDataset, Split, TrainSampler, UserSplit, window_targets_for
from dimerec.errors import DataError, DimeRecError, TrainingDiverged
from dimerec.evaluate import SAMPLED_MIXTURE_REFUSAL, Protocol, evaluate, sampled_metrics, step_metrics
from dimerec.models.base import Batch, Recommender, Settings, option
from dimerec.retrieval import RetrieverKind, make_retriever
from dimerec.runs import (  # noqa: F401  (load_run, load_checkpoint: importable from here as before)
    LossLog, check_fingerprint, check_resumable, checkpoint_payload, discard_failed_start, load_checkpoint, load_run,
    read_config, save_atomic, truncate_log, write_json_atomic)
from dimerec.serving import SERVING_FIELDS, ServeConfig, ranking, serving_of


@dataclass
class TrainConfig(Settings):
    lr: float = option(0.005, "Adam learning rate (the paper's for every model, §5.1.4)", above=0)
    batch_size: int = option(256, "training batch size (the paper's)", at_least=1)
    max_epochs: int = option(50, "at most this many passes over the training samples", at_least=1)
    patience: int = option(3, "stop after this many validations without a better HR@50", at_least=1)
    max_minutes: float | None = option(None, "wall-clock budget of training (validation excluded)",
                                       above=0)
    max_steps: int | None = option(None, "step budget of training: unlike --max-minutes, the same on any machine",
                                   at_least=1)
    eval_every: int | None = option(None, "steps between validations (default: one epoch)", at_least=1)
    checkpoint_every: int | None = option(None, "also write last.pt and flush losses.csv/valid.csv every this many "
                                                "steps, so --resume loses less and a watcher sees progress "
                                                "(default: at each validation only)", at_least=1)
    valid_max_rows: int | None = option(None, "validate on a seeded subsample of this many rows while training",
                                        at_least=1)
    final_max_rows: int | None = option(None, "final valid/test metrics on a seeded subsample of this many rows "
                                              "(the same rows for every model of a seed; default: all rows)",
                                        at_least=1)
    sampling: Sampling | None = option(
        None, "training samples: windows = stretches of a sequence whose every position is a target, a window "
              "scored in one pass; prefixes = one (history, next item) pair a pass; random-cut = ComiRec's "
              "random cut (default: windows for SASRec, GRU4Rec and MIND, prefixes for the others)")
    window_targets: int | None = option(None, "targets per window of --sampling windows, 1..max_len: each sees at "
                                              "least max_len - s + 1 earlier items (default: half of max_len)",
                                        at_least=1)
    max_len: int | None = option(None, "the history length models read: the last max_len items (default: the "
                                       "dataset's, 70 on MovieLens, 10 on YooChoose and KuaiRec, 20 on planted; "
                                       "RecBole's MAX_ITEM_LIST_LENGTH is 50)", at_least=1)
    protocol: Protocol = option("next-item", "evaluation protocol (SPEC §2); loo: RecBole's leave-one-out, every user "
                                             "trains on all but its last two items (validated on the second-to-last, "
                                             "tested on the last)")
    mask_seen: bool = option(False, "remove already-seen items from rankings (the paper does not)")
    retriever: RetrieverKind = option(
        "torch", "top-50 by dense torch scores, a faiss exact inner-product index, or faiss's approximate IVF or "
                 "HNSW index (for large catalogues)")
    retriever_params: str | None = option(None, "faiss-ivf: nlist=N,nprobe=N (default: 4·sqrt(items) cells, 64 "
                                                "probed); faiss-hnsw: M=N,efConstruction=N,efSearch=N "
                                                "(default: 32, 80, 256)")
    seed: int = option(0, "seed of initialisation, sampling and evaluation noise", at_least=0)
    split_seed: int = option(0, "seed of the 8:1:1 user split and of the planted world (fixed across training seeds)",
                             at_least=0)
    split: Split = option("random", "users split 8:1:1 by --split-seed, or `given`: the dataset's own parts "
                                    "(a DreamRec folder's train_data.df, val_data.df, test_data.df)")
    read_test: bool = option(True, "evaluate the best checkpoint on test at the end (--no-read-test for tuning runs)")
    device: str = option("cpu", "where to train and score: cpu, or cuda / cuda:N (a GPU; the same seed repeats its "
                                "numbers on one device, but a GPU's differ from the CPU's)")

    def __post_init__(self):
        super().__post_init__()
        if self.window_targets is not None and self.sampling not in (None, "windows"):
            raise DimeRecError(f"--window-targets {self.window_targets} applies to --sampling windows only; "
                               f"got --sampling {self.sampling}")
        make_retriever(self.retriever, self.retriever_params)  # a bad parameter fails here, not at validation
        check_device(self.device)


def resolve_sampling(cfg: TrainConfig, model: Recommender, data: SeqDataset,
                     recorded: dict | None = None) -> TrainConfig:
    """cfg with its sampling decided: --sampling, else the sampling of the run being resumed (`recorded`, its
    config.json's train_config), else the model's default (`windows_by_default`: SASRec, GRU4Rec and MIND;
    prefixes for the others); a
    DimeRecError for a windows setting that cannot work, before anything is written."""
    sampling = cfg.sampling or (recorded or {}).get("sampling") or (
        "windows" if model.windows_by_default else "prefixes")
    if sampling == "windows":
        if not model.takes_windows:
            raise DimeRecError(f"--sampling windows: {model.name} scores one target per pass (see its module "
                               f"docstring); use --sampling prefixes")
    window_targets = window_targets_for(data, cfg.window_targets) if sampling == "windows" else cfg.window_targets
    return dataclasses.replace(cfg, sampling=sampling, window_targets=window_targets)


def check_device(name: str) -> torch.device:
    """torch.device(name), or a DimeRecError saying why this machine cannot use it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DimeRecError(f"--device must be cpu, cuda or cuda:N; got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise DimeRecError(f"--device must be cpu, cuda or cuda:N; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DimeRecError(f"--device {name}: this machine has no GPU that PyTorch can use "
                               f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DimeRecError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                               f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


@dataclass
class ProtocolData:
    """What a protocol trains, validates and tests on: the users of each part and the sequences they are
    read from (one dataset for next-item and future; three truncations of it for loo)."""
    split: UserSplit
    train: SeqDataset
    valid: SeqDataset
    test: SeqDataset


def without_last(data: SeqDataset, k: int) -> SeqDataset:
    """`data` with each sequence's last k items dropped, keeping at least its first item (so a user keeps
    its index; a sequence too short for a target then yields no sample or row)."""
    return dataclasses.replace(data, sequences=[s[:max(1, len(s) - k)] for s in data.sequences])


def protocol_data(data: SeqDataset, protocol: str, split_seed: int) -> ProtocolData:
    """next-item and future: the seeded 8:1:1 user split of one dataset. loo (RecBole's leave-one-out):
    every user in every part; training reads each sequence without its last two items, validation
    predicts the second-to-last item from the ones before it, test the last from all before it."""
    if protocol != "loo":
        return ProtocolData(data.split(split_seed), data, data, data)
    everyone = np.arange(data.n_users)
    return ProtocolData(UserSplit(everyone, everyone, everyone), without_last(data, 2), without_last(data, 1), data)


def data_notes(data: SeqDataset, protocol: str, split_seed: int) -> list[str]:
    """What is dropped or defaulted, counted: the reader's notes (items a .item file leaves without a category, ...)
    and the users of each part whose sequence is too short for that part under `protocol`. The CLI says each once;
    the run keeps them in config.json."""
    views = protocol_data(data, protocol, split_seed)
    held_out = {"training": 2, "validation": 1, "test": 0} if protocol == "loo" else {}  # items loo cuts off
    notes = list(data.notes)
    for part, users, view in (("training", views.split.train, views.train),
                              ("validation", views.split.valid, views.valid), ("test", views.split.test, views.test)):
        short = sum(len(view.sequences[u]) < 2 for u in users)
        if short:
            notes.append(f"--protocol {protocol}: {short} of the {len(users)} {part} users/sequences have fewer than "
                         f"{2 + held_out.get(part, 0)} items, too few for a {part} "
                         f"{'sample' if part == 'training' else 'row'}, and are left out of it")
    return notes


def check_splittable(data: SeqDataset, split_seed: int, split: str = "random") -> None:
    """A DataError unless the split (`split`, of `split_seed`) leaves each of train, validation and test a sequence
    of at least two items (one history item and one target): evaluating an empty part has no metrics."""
    read_with = "given" if data.given_split is not None else "random"
    if read_with != split:
        raise DimeRecError(f"--split {split}, but {data.source or data.name} was read with the {read_with} split; "
                           f"load it with load_dataset(..., split={split!r})")
    how = "its own parts (--split given)" if split == "given" else f"the 8:1:1 split (--split-seed {split_seed})"
    parts = data.split(split_seed)
    for part, users in (("training", parts.train), ("validation", parts.valid), ("test", parts.test)):
        if not any(len(data.sequences[u]) >= 2 for u in users):
            raise DataError(f"{data.source or data.name}: too small to split: with {data.n_users} "
                            f"users/sequences {how} leaves the {part} part {len(users)} users and no sequence "
                            f"of 2+ items; a dataset needs at least 10 sequences, enough of them of 2+ items")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds the GPUs' generators too
    np.random.seed(seed)
    # Same seed, same numbers: e.g. the CPU backward of F.embedding otherwise accumulates in thread order;
    # on a GPU, cuBLAS is deterministic only with this workspace setting (read when CUDA starts).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def cpu_capability() -> str:
    """The instruction set PyTorch's CPU kernels use here ("AVX512", "AVX2", ...; ATEN_CPU_CAPABILITY lowers it)."""
    return torch.backends.cpu.get_cpu_capability()


def check_same_device_kind(out_dir: Path, recorded: str, wanted: str) -> None:
    """--resume continues a run on the kind of device that trained it: config.json records one device a run, and
    its train min, the tables' device note and the seed's numbers hold for that one kind."""
    if torch.device(recorded).type != torch.device(wanted).type:
        raise DimeRecError(f"--resume: {out_dir} trained on {recorded}, not {wanted}; a run keeps one kind of "
                           f"device, so continue it with --device {recorded}, or train it again with --overwrite")


@contextlib.contextmanager
def attention_kernels(device: torch.device) -> Iterator[None]:
    """Within the block, on a GPU, PyTorch's plain attention kernel alone: the fused ones' backward is not
    deterministic there (PyTorch warns). Scoped, not process-wide: the switches also pick the CPU's own fused
    kernel, so a CPU run or analysis after a GPU run in the same process keeps it (else 3x slower, and other
    rounding than the committed runs' numbers). The CPU needs no switch."""
    if device.type != "cuda":
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def train(model: Recommender, data: SeqDataset, cfg: TrainConfig, out_dir: Path, *,
          run_info: dict | None = None, resume: bool = False, progress: bool = True,
          before_writing: Callable[[SeqDataset], None] | None = None, serve: ServeConfig | None = None) -> dict:
    """Train `model` on `data`, keep the best checkpoint, evaluate it on test once. Returns metrics.json.
    `before_writing(data)` runs once the data is known to split, before the run directory is read or written (the
    CLI: its notes and --overwrite). `serve`: how validation, test and config.json's "serving" serve the run
    (default: the model's own)."""
    out_dir = Path(out_dir)
    serve = serving_of(model, dataclasses.asdict(serve) if serve else None)  # checked before anything is written
    check_splittable(data, cfg.split_seed, cfg.split)  # before anything is written, as is reading last.pt
    if before_writing is not None:
        before_writing(data)
    recorded, earlier_capabilities = None, []
    if resume and (out_dir / "config.json").exists():
        recorded_config = read_config(out_dir)  # runs' one reader: an old run's config as today's code reads it
        recorded = recorded_config.get("train_config")
        check_same_device_kind(out_dir, (recorded or {}).get("device", "cpu"), cfg.device)
        earlier_capabilities = recorded_config.get("cpu_capabilities", ["unrecorded"])
    # PyTorch picks its CPU kernels by the widest instruction set (AVX2, AVX512, ...) and their rounding differs,
    # so the same seed repeats its numbers per instruction set: a run resumed on another machine records both
    run_info = {**(run_info or {}), "cpu_capabilities": sorted({*earlier_capabilities, cpu_capability()})}
    cfg = resolve_sampling(cfg, model, data, recorded)
    last = None
    if resume:
        check_resumable(out_dir, model.trainable)
    if resume and model.trainable:
        last = load_checkpoint(out_dir / "last.pt", ("model", "optimizer", "sampler", "torch_rng", "state"),
                               remedy="it cannot be resumed: train again without --resume, with --overwrite")
        check_fingerprint(data, cfg.split_seed,
                          {out_dir / "last.pt": json.loads(last.get("data_fingerprint") or "null")})
    ctx = distributed.start(cfg.device)  # under torchrun with N > 1: one of N data-parallel ranks
    created = not out_dir.exists()
    try:
        on = check_device(cfg.device)
        with attention_kernels(on):
            return _train(model, data, cfg, out_dir, run_info, resume, progress, ctx, last, serve, on)
    except BaseException as err:  # a run is whole or absent: what the directory keeps is said with the error
        if ctx.main:
            err.add_note(discard_failed_start(out_dir, started=not resume, created=created))
        raise
    finally:
        ctx.close()


def _train(model, data, cfg, out_dir, run_info, resume, progress, ctx: distributed.Context, last,
           serve: ServeConfig, on: torch.device) -> dict:
    if ctx.main:  # rank 0 alone writes the run directory
        out_dir.mkdir(parents=True, exist_ok=True)
    views = protocol_data(data, cfg.protocol, cfg.split_seed)
    split = views.split
    seed_everything(cfg.seed)
    model.fit_statistics(views.train, split.train)
    device = ctx.device(on)  # under torchrun on GPUs, each rank its own: cuda:LOCAL_RANK
    model.to(device)
    config = run_record(model, data, cfg, serve, run_info, ctx)
    if ctx.main:
        write_json_atomic(config, out_dir / "config.json")
    ctx.barrier()  # the other ranks read config.json and the checkpoints rank 0 writes
    ctx.seed_rank(cfg.seed)
    valid_kwargs = dict(protocol=cfg.protocol, mask_seen=cfg.mask_seen, serve=serve,
                        retriever=make_retriever(cfg.retriever, cfg.retriever_params), seed=cfg.seed,
                        popularity=views.train.item_popularity(split.train))

    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best_hr": -1.0, "bad_evals": 0, "done": False}
    if model.trainable:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sampler = TrainSampler(views.train, split.train, cfg.batch_size, cfg.sampling, seed=cfg.seed,
                               window_targets=cfg.window_targets)
        sampler.shard = (ctx.rank, ctx.world)
        state["targets_per_epoch"] = sampler.targets_per_epoch
        if last is not None:
            state = restore(last, model, optimizer, sampler, cfg, ctx, device)
        if ctx.main:
            for log_name in ("losses.csv", "valid.csv"):  # rows logged after the checkpoint are redone: drop them
                truncate_log(out_dir / log_name, state["step"])
        log = LossLog(out_dir / "losses.csv" if ctx.main else Path(os.devnull), resume=resume and state["step"] > 0)
        try:
            _fit(model, views.valid, cfg, out_dir, split, optimizer, sampler, state, log, valid_kwargs, progress,
                 device, ctx)
        finally:
            log.close()
        model.load_state_dict(load_checkpoint(out_dir / "best.pt")["model"])
    elif ctx.main:
        save_atomic(checkpoint_payload(model, config, state), out_dir / "best.pt")
    if not ctx.main:  # rank 0 alone evaluates and writes; the others return its metrics
        return ctx.share(None)
    return ctx.share(score_and_record(model, data, views, cfg, serve, state, out_dir))


def run_record(model, data, cfg: TrainConfig, serve: ServeConfig, run_info: dict | None,
               ctx: distributed.Context) -> dict:
    """config.json: everything needed to rebuild the run, how it is served, and what the data was."""
    return {**(run_info or {}), "model": model.name, "dataset": data.name, "n_items": data.n_items,
            "max_len": data.max_len, "model_config": asdict(model.config), "train_config": asdict(cfg),
            "serving": asdict(serve),
            "dataset_stats": data.stats(), "data_fingerprint": data.fingerprint(cfg.split_seed),
            "data_notes": data_notes(data, cfg.protocol, cfg.split_seed),
            **({"planted_params": data.ground_truth["params"]} if data.ground_truth else {}),
            **({"distributed": ctx.describe(cfg.batch_size)} if ctx.world > 1 else {})}


def restore(last: dict, model, optimizer, sampler, cfg: TrainConfig, ctx: distributed.Context, device) -> dict:
    """--resume: the model, optimizer, sampler and random state of last.pt (this rank's, under torchrun); returns
    the training state, marked done when the run had stopped on its step budget or its patience."""
    model.load_state_dict(last["model"])
    optimizer.load_state_dict(last["optimizer"])
    sampler.load_state_dict(json.loads(last["sampler"]))
    rngs = last.get("torch_rng_ranks") or []  # under torchrun: every rank's generator
    torch.set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world > 1 else last["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in last:
        cuda_rngs = last.get("cuda_rng_ranks") or []
        torch.cuda.set_rng_state(cuda_rngs[ctx.rank] if len(cuda_rngs) == ctx.world > 1 else last["cuda_rng"],
                                 device)
    state = json.loads(last["state"])
    # a run that had stopped on its step budget or its patience stays stopped (it trained one more step)
    state["done"] = state["step"] >= (cfg.max_steps or math.inf) or state["bad_evals"] >= cfg.patience
    if state["done"]:
        state["stopped_by"] = stop_reason(state, cfg, state["bad_evals"] < cfg.patience)
    return state


def final_valid_is_best_valid(train_config: dict) -> bool:
    """Whether a run's final validation metrics are its best validation's, reused (`score_and_record`): it
    validated on the very rows of its final validation. `train_config` is config.json's (asdict of TrainConfig)."""
    return train_config.get("valid_max_rows") == train_config.get("final_max_rows")


def score_and_record(model, data, views, cfg: TrainConfig, serve: ServeConfig, state: dict, out_dir: Path) -> dict:
    """The best checkpoint's validation and test metrics (test read here only) and, for a model that denoises,
    x̂0's along the chain: metrics.json and step_metrics.json, written; returns metrics.json."""
    # best.pt was validated on the very rows, seed and settings of the final validation: its metrics are reused
    known_valid = state.get("best_valid") if final_valid_is_best_valid(asdict(cfg)) else None
    valid, test = final_metrics(model, data, asdict(cfg), serve, read_test=cfg.read_test,
                                valid=known_valid)  # the only read of test
    metrics = {"model": model.name, "dataset": data.name, "protocol": cfg.protocol, "seed": cfg.seed,
               "mask_seen": cfg.mask_seen, "epochs": state["epoch"], "steps": state["step"],
               "sampling": cfg.sampling,
               **({k: state[k] for k in ("epochs_trained", "stopped_by", "targets_per_epoch") if k in state}),
               "train_minutes": round(state["elapsed"] / 60, 3), "valid": valid, "test": test,
               **({"sampled_test": sampled_test(model, data, asdict(cfg), serve)} if cfg.read_test else {})}
    if model.denoises:  # the quality of x̂0 along the reverse chain, on validation (Fig. 5)
        split = views.split  # step_metrics scores split.valid: its rows are read from views.valid
        steps = step_metrics(model, views.valid, split.valid, cfg.protocol, mask_seen=cfg.mask_seen, seed=cfg.seed,
                             serve=serve, max_rows=cfg.valid_max_rows)
        write_json_atomic({**steps, "split": "valid"}, out_dir / "step_metrics.json")
    write_json_atomic(metrics, out_dir / "metrics.json")
    return metrics


def model_class(name: str) -> type[Recommender]:
    """The class registered as `name` in dimerec.models.MODELS."""
    from dimerec.models import MODELS

    if name not in MODELS:
        raise DimeRecError(f"unknown model {name!r}; models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _refuse_unknown(settings, groups: dict[str, list[str]]) -> None:
    """DimeRecError naming the settings that are in none of `groups` (title -> valid names), listing those."""
    unknown = [k for k in settings if not any(k in names for names in groups.values())]
    if unknown:
        valid = "; ".join(f"{title}: {', '.join(names)}" for title, names in groups.items())
        raise DimeRecError(f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                           f"valid settings are {valid}")


def build_model(name: str, data: SeqDataset, *, seed: int = 0, **settings) -> Recommender:
    """Model `name` for `data`, its Config built from `settings` (its fields; an unknown one raises
    DimeRecError), initialised under `seed` as `python -m dimerec train` does: seed_everything, then build."""
    model_cls = model_class(name)
    _refuse_unknown(settings, {f"model {name}": [f.name for f in fields(model_cls.Config)]})
    config = model_cls.Config(**settings)
    seed_everything(seed)  # the model's initialisation is drawn here, before train() seeds sampling
    return model_cls(data.n_items, data.max_len, config)


def train_model(model: str, dataset: str | SeqDataset = "planted", *, out: str | Path | None = None,
                data_dir: str | Path | None = None, seed: int = 0, progress: bool = False, resume: bool = False,
                run_info: dict | None = None, **settings) -> tuple[Recommender, SeqDataset, dict]:
    """Train model `model` on `dataset` exactly as `python -m dimerec train` does; returns (model with its
    best weights, data, metrics.json as a dict).

    `settings` are the command's flags as keywords: TrainConfig fields (max_steps=30, lr=0.001, ...) and
    fields of the model's Config (preset="paper", ...); an unknown one raises DimeRecError listing the valid
    names. `dataset` is a name for load_dataset (read from `data_dir`; planted's world follows split_seed)
    or a SeqDataset already loaded. `out` is the run directory; with None the run is written to a temporary
    directory that is DELETED on return (the returned model keeps the best weights; pass `out` to keep
    config.json, losses.csv, best.pt, ...). `run_info` adds keys to config.json (the CLI: its command).
    """
    model_fields = [f.name for f in fields(model_class(model).Config)]
    train_fields = [f.name for f in fields(TrainConfig) if f.name != "seed"]  # seed is its own argument
    serve_fields = list(SERVING_FIELDS) if model_class(model).denoises else []
    _refuse_unknown(settings, {"training": train_fields, f"model {model}": model_fields,
                               **({"serving": serve_fields} if serve_fields else {})})
    if resume and out is None:
        raise DimeRecError("resume needs the run directory `out` of the run to continue")
    cfg = TrainConfig(seed=seed, **{k: v for k, v in settings.items() if k in train_fields})
    serve = ServeConfig(**{k: v for k, v in settings.items() if k in serve_fields})
    return train_with_config(model, dataset, cfg, {k: v for k, v in settings.items() if k in model_fields}, out=out,
                             data_dir=data_dir, progress=progress, resume=resume, run_info=run_info, serve=serve)


def train_with_config(model: str, dataset: str | SeqDataset, cfg: TrainConfig, model_settings: dict, *,
                      out: str | Path | None, data_dir: str | Path | None, progress: bool, resume: bool,
                      run_info: dict | None, before_writing: Callable[[SeqDataset], None] | None = None,
                      serve: ServeConfig | None = None) -> tuple[Recommender, SeqDataset, dict]:
    """`train_model` once its settings are checked: the training's built as `cfg`, the model's (fields of its
    Config) in `model_settings`, its serving `serve`. `before_writing`: see `train`."""
    from dimerec.data import load_dataset, with_history_length

    if isinstance(dataset, SeqDataset):
        data = dataset
    else:
        data = load_dataset(dataset, data_dir, seed=cfg.split_seed, split=cfg.split)  # planted: follows the split seed
    data = with_history_length(data, cfg.max_len)  # before the model, whose positions it sizes
    net = build_model(model, data, seed=cfg.seed, **model_settings)
    info = {"data_dir": str(data_dir) if data_dir else None, **(run_info or {})}
    if out is not None:
        return net, data, train(net, data, cfg, Path(out), run_info=info, resume=resume, progress=progress,
                                before_writing=before_writing, serve=serve)
    with tempfile.TemporaryDirectory(prefix=f"dimerec-{model}-") as tmp:
        return net, data, train(net, data, cfg, Path(tmp), run_info=info, progress=progress,
                                before_writing=before_writing, serve=serve)


def final_metrics(model: Recommender, data: SeqDataset, train_config: dict, serve: ServeConfig | None = None, *,
                  protocol: str | None = None,
                  mask_seen: bool | None = None, retriever: str | None = None, retriever_params: str | None = None,
                  read_test: bool = True, valid: dict | None = None) -> tuple[dict, dict | None]:
    """Valid and test metrics of a trained model as its run defines them (protocol, masking, retriever,
    seed, final_max_rows), each overridable, served as `serve` says (dimerec.serving; default the model's own);
    test is None when `read_test` is False. `valid`: the
    validation metrics already computed under exactly these settings, returned instead of recomputed."""
    cfg = train_config
    protocol = protocol or cfg["protocol"]
    if (protocol == "loo") != (cfg["protocol"] == "loo"):
        raise DimeRecError(f"a run trained under --protocol {cfg['protocol']} cannot be scored under {protocol}: "
                           f"loo trains on every user, the others hold users out")
    views = protocol_data(data, protocol, cfg["split_seed"])
    split = views.split
    kwargs = dict(protocol=protocol, mask_seen=cfg["mask_seen"] if mask_seen is None else mask_seen,
                  serve=serve or serving_of(model),
                  retriever=run_retriever(cfg, retriever, retriever_params), seed=cfg["seed"],
                  max_rows=cfg.get("final_max_rows"), popularity=views.train.item_popularity(split.train))
    valid = valid if valid is not None else evaluate(model, views.valid, split.valid, **kwargs)["final"]
    return valid, evaluate(model, views.test, split.test, **kwargs)["final"] if read_test else None


SAMPLED_NEGATIVES = 100  # the baselines' own papers' protocol (SASRec §IV-B): Table 1's sanity check


def sampled_test(model: Recommender, data: SeqDataset, train_config: dict, serve: ServeConfig | None = None,
                 n_negatives: int = SAMPLED_NEGATIVES, *, strict: bool = False) -> dict | None:
    """The sampled protocol on the run's test users (evaluate.sampled_metrics, the run's seed): recorded when test is
    scored, so that Table 1's sanity check reads metrics.json, not the weights. None where it does not apply (or,
    `strict`, a DimeRecError saying why: `evaluate --sampled-negatives`): a leave-one-out run (its test users are
    every user), a run served by the mixture (ranked by the full ranking only) or a catalogue too small to draw the
    negatives from every test user's unseen items."""
    serve = serve or serving_of(model)
    test = data.split(train_config["split_seed"]).test
    refusal = _sampled_refusal(model, data, train_config, serve, test, n_negatives)
    if refusal is not None:
        if strict:
            raise DimeRecError(refusal)
        return None
    return sampled_metrics(model, data, test, n_negatives, seed=train_config["seed"], serve=serve)


def _sampled_refusal(model, data: SeqDataset, train_config: dict, serve: ServeConfig, test: np.ndarray,
                     n_negatives: int) -> str | None:
    """Why the sampled protocol does not apply to this run (sampled_test), or None."""
    if train_config["protocol"] == "loo":
        return "a leave-one-out run scores every user's last item; the sampled check ranks a user split's test users"
    if ranking(model, serve).merge != "max":
        return SAMPLED_MIXTURE_REFUSAL
    fewest_unseen = min((data.n_items - len(np.unique(data.sequences[user])) for user in test), default=0)
    if fewest_unseen < n_negatives:
        return f"a test user has only {fewest_unseen} unseen items; {n_negatives} negatives cannot be drawn"
    return None


def run_retriever(train_config: dict, name: str | None = None, params: str | None = None):
    """The run's retriever, or `name` in its place; the run's parameters hold only for the run's retriever."""
    if name is None or name == train_config["retriever"]:
        name, params = train_config["retriever"], params if params is not None else train_config.get("retriever_params")
    return make_retriever(name, params)


def stop_reason(state: dict, cfg: TrainConfig, out_of_time: bool) -> str:
    """Why training ended (or would end here): its validation stopped improving (patience), or a budget ran out
    first (max_steps, max_minutes, else max_epochs: every epoch trained without the patience running out)."""
    if state["bad_evals"] >= cfg.patience:
        return "patience"
    if out_of_time:
        return "max_steps" if state["step"] >= (cfg.max_steps or math.inf) else "max_minutes"
    return "max_epochs"


def _fit(model, data, cfg, out_dir, split, optimizer, sampler, state, log, valid_kwargs, progress, device,
         ctx: distributed.Context = distributed.Context()):
    fit = _Fit(model, data, cfg, out_dir, split, optimizer, sampler, state, log, valid_kwargs, device, ctx)
    model.train()
    step_loss = ctx.wrap(model, device)  # model.loss, through DistributedDataParallel under torchrun
    bar = tqdm(total=fit.budget if fit.budget < math.inf else None, disable=not progress or not ctx.main, unit="s",
               bar_format="{desc} {bar} {elapsed}<{remaining} {postfix}" if fit.budget < math.inf else None)
    try:
        fit.loop(step_loss, bar, progress)
        if not (out_dir / "best.pt").exists():
            fit.validate_and_checkpoint()
        state.setdefault("stopped_by", "max_epochs")  # the loop ran out of epochs before patience or a budget
    finally:
        bar.close()
        fit.valid_log.close()


@dataclass
class _Fit:
    """One run's training loop (`_fit`): its steps, its validations (best.pt) and its checkpoints (last.pt)."""

    model: Recommender
    data: SeqDataset  # validation reads its rows from here
    cfg: TrainConfig
    out_dir: Path
    split: UserSplit
    optimizer: torch.optim.Optimizer
    sampler: TrainSampler
    state: dict
    log: LossLog
    valid_kwargs: dict
    device: torch.device
    ctx: distributed.Context

    def __post_init__(self):
        self.config_json = (self.out_dir / "config.json").read_text()
        self.eval_every = self.cfg.eval_every or self.sampler.steps_per_epoch
        self.budget = self.cfg.max_minutes * 60 if self.cfg.max_minutes is not None else math.inf
        self.valid_log = open(self.out_dir / "valid.csv" if self.ctx.main else os.devnull,
                              "a" if self.state["step"] > 0 else "w", newline="")
        self.valid_writer = csv.writer(self.valid_log)
        if self.state["step"] == 0:
            self.valid_writer.writerow(["epoch", "step", "train_minutes", "HR@50", "NDCG@50", "HR@10"])

    def loop(self, step_loss, bar, progress: bool) -> None:
        """Train until patience, a budget or the epochs run out, validating every eval_every steps."""
        state, cfg, sampler, ctx = self.state, self.cfg, self.sampler, self.ctx
        tick = time.perf_counter()  # the budget counts sampling and training steps, not validation
        while not state["done"] and (state["epoch"] < cfg.max_epochs or sampler.mid_epoch):
            if not sampler.mid_epoch:  # a checkpoint within an epoch resumes that epoch
                state["epoch"] += 1
            bar.set_description(f"epoch {state['epoch']}/{cfg.max_epochs}")
            for hist, target in sampler.epoch():
                values = self.train_step(step_loss, hist, target)
                step_time, tick = time.perf_counter() - tick, time.perf_counter()
                step_time = ctx.mean({"t": step_time})["t"]  # the same clock on every rank, so all stop together
                state["elapsed"] += step_time
                self.log.write(state["step"], state["epoch"], values)
                if self.budget < math.inf:
                    bar.update(min(step_time, self.budget - bar.n))
                else:
                    bar.update(1)
                if state["step"] % 50 == 0:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
                out_of_time = state["elapsed"] >= self.budget or state["step"] >= (cfg.max_steps or math.inf)
                validating = state["step"] % self.eval_every == 0 or out_of_time
                if not validating and cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                    self.checkpoint()
                    tick = time.perf_counter()  # writing the checkpoint is not training time
                if validating:
                    self.validate(bar, progress)
                    tick = time.perf_counter()  # the next step's time starts here, after validation
                    if state["bad_evals"] >= cfg.patience or out_of_time:
                        state["done"] = True
                        state["stopped_by"] = stop_reason(state, cfg, out_of_time)
                        break

    def train_step(self, step_loss, hist: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """One optimiser step on a batch; its loss terms, the mean over ranks (TrainingDiverged if one is not
        finite)."""
        state, device = self.state, self.device
        terms = step_loss(Batch(torch.from_numpy(hist).to(device), torch.from_numpy(target).to(device),
                                self.data.pad_id))
        values = self.ctx.mean({k: float(v.detach()) for k, v in terms.items()})
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"{', '.join(bad)} became {values[bad[0]]} at step {state['step'] + 1} "
                f"(epoch {state['epoch']}); "
                f"lower --lr (now {self.cfg.lr}) or check the model's settings")
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        state["step"] += 1
        return values

    def gather_rngs(self) -> tuple[list, list | None]:
        """Every rank's torch generator state, and CUDA's on a GPU, for --resume (every rank must call it)."""
        rngs = self.ctx.gather(torch.get_rng_state())
        cuda_rngs = self.ctx.gather(torch.cuda.get_rng_state(self.device)) if self.device.type == "cuda" else None
        return rngs, cuda_rngs

    def checkpoint(self) -> None:
        """last.pt between validations (--checkpoint-every), with the logs flushed."""
        rngs, cuda_rngs = self.gather_rngs()
        if self.ctx.main:
            self.log.file.flush()  # a watcher sees the steps so far; --resume continues from here
            self.valid_log.flush()
            self.save_last(rngs, cuda_rngs)

    def validate(self, bar, progress: bool) -> None:
        state = self.state
        state["epochs_trained"] = round(state["step"] / self.sampler.steps_per_epoch, 3)
        metrics = self.validate_and_checkpoint()
        if progress and self.ctx.main:
            bar.write(f"epoch {state['epoch']} step {state['step']}: valid HR@50 {metrics['HR@50']:.4f} "
                      f"NDCG@50 {metrics['NDCG@50']:.4f} (best {state['best_hr']:.4f})")

    def validate_and_checkpoint(self) -> dict:  # rank 0 validates and writes; every rank gets its metrics and state
        rngs, cuda_rngs = self.gather_rngs()
        metrics = self.ctx.share(self._validate_on_main(rngs, cuda_rngs) if self.ctx.main else None)
        self.state.update(self.ctx.share(self.state))
        return metrics

    def _validate_on_main(self, rngs, cuda_rngs) -> dict:
        state = self.state
        metrics = evaluate(self.model, self.data, self.split.valid, max_rows=self.cfg.valid_max_rows,
                           **self.valid_kwargs)["final"]
        self.valid_writer.writerow([state["epoch"], state["step"], round(state["elapsed"] / 60, 3),
                                    metrics["HR@50"], metrics["NDCG@50"], metrics["HR@10"]])
        self.valid_log.flush()
        self.log.file.flush()
        if metrics["HR@50"] > state["best_hr"]:
            state["best_hr"], state["bad_evals"], state["best_valid"] = metrics["HR@50"], 0, metrics
            save_atomic(checkpoint_payload(self.model, json.loads(self.config_json), state), self.out_dir / "best.pt")
        else:
            state["bad_evals"] += 1
        self.save_last(rngs, cuda_rngs)
        return metrics

    def save_last(self, rngs, cuda_rngs) -> None:  # everything --resume needs, the sampler's place in the epoch too
        ctx, device = self.ctx, self.device
        save_atomic({**checkpoint_payload(self.model, json.loads(self.config_json), self.state),
                     "optimizer": self.optimizer.state_dict(), "sampler": json.dumps(self.sampler.state_dict()),
                     "torch_rng": torch.get_rng_state(), **({"torch_rng_ranks": rngs} if ctx.world > 1 else {}),
                     **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                     **({"cuda_rng_ranks": cuda_rngs} if ctx.world > 1 and cuda_rngs else {})},
                    self.out_dir / "last.pt")
