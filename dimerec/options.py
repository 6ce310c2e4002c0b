"""The `train` command's flags, parsed once for the command line and for `reproduce` (which trains through
`train_from_argv` rather than through the CLI, so that reproduce does not import the CLI that imports it).

Every field of `TrainConfig`, of the chosen model's Config and, for a model that denoises, of
`dimerec.serving.ServeConfig` becomes a `--field-name` flag (add_dataclass_args).
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
import types
import typing
from pathlib import Path

from dimerec.errors import DimeRecError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes (a flag's value of the wrong type, a missing argument) are one `error:` line
    with exit status 2, like every other user mistake, instead of the usage text and the error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_dataclass_args(parser: argparse.ArgumentParser, cls, title: str, *, unset: bool = False) -> None:
    """One --flag per dataclass field, typed from its annotation; Literal fields list their choices. `unset`:
    a flag not given is absent from the parsed namespace (a change to something recorded, not its default)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        args = typing.get_args(kind)
        optional = type(None) in args and typing.get_origin(kind) in (typing.Union, types.UnionType)
        if optional:
            kind = next(a for a in args if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text and not unset:
            help_text = f"{help_text} (default: {default})".lstrip()
        if "range" in f.metadata:
            help_text = f"{help_text}; {f.metadata['range']}"
        default = argparse.SUPPRESS if unset else default
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                               help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(flag, dest=f.name, choices=typing.get_args(kind), default=default, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text)


def settings_from_args(args: argparse.Namespace, *classes) -> dict:
    """The values of the flags that add_dataclass_args made for `classes`, by field name."""
    return {f.name: getattr(args, f.name) for cls in classes for f in dataclasses.fields(cls)}


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """DimeRecError naming the first of the flags `names` (dest names) set to zero or less; None is unset."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise DimeRecError(f"--{name.replace('_', '-')} must be above 0; got {value!r}")


def add_train_arguments(p: argparse.ArgumentParser, model_name: str | None) -> None:
    """The flags of `python -m dimerec train` (the model's own only once --model names it)."""
    from dimerec.data import DATA_DIR_HELP
    from dimerec.models import MODELS
    from dimerec.runs import RUNS_ROOT
    from dimerec.serving import ServeConfig
    from dimerec.trainer import TrainConfig

    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--dataset", required=True, help="planted, ml-1m, yoochoose, kuairec, ... (see `datasets`)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--out", help=f"run directory (default: {RUNS_ROOT}/MODEL-DATASET-sSEED)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, on the kind of device (--device) it "
                        "trained on")
    p.add_argument("--overwrite", action="store_true", help="delete --out first if it holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, TrainConfig, "training")
    if model_name in MODELS:
        add_dataclass_args(p, MODELS[model_name].Config, f"model {model_name}")
        if MODELS[model_name].denoises:
            add_dataclass_args(p, ServeConfig, "serving (validation and test; dimerec.serving)")


def train_from_args(args: argparse.Namespace, model_cls, argv: list[str]) -> tuple[dict, Path]:
    """`python -m dimerec train` once its flags are parsed: (metrics.json as a dict, the run directory)."""
    from dimerec.data import load_dataset
    from dimerec.runs import RUNS_ROOT
    from dimerec.serving import SERVING_FIELDS, ServeConfig
    from dimerec.trainer import TrainConfig, data_notes, train_with_config

    out = Path(args.out or RUNS_ROOT / f"{args.model}-{args.dataset}-s{args.seed}")
    if out.exists() and not out.is_dir():
        raise DimeRecError(f"--out {out} is a file, not a run directory; choose another --out")
    if (out / "config.json").exists() and not (args.resume or args.overwrite):
        raise DimeRecError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                           f"or choose another --out")
    if args.resume and args.overwrite:
        raise DimeRecError("--resume continues the run in --out and --overwrite deletes it: pass one of the two")
    settings = settings_from_args(args, TrainConfig, model_cls.Config, *([ServeConfig] if model_cls.denoises else []))
    # every setting (the training's, the model's and its serving) and the data are checked before anything is
    # written or --overwrite deletes anything
    cfg = TrainConfig(**{f.name: settings[f.name] for f in dataclasses.fields(TrainConfig)})
    model_settings = {f.name: settings[f.name] for f in dataclasses.fields(model_cls.Config)}
    model_cls.Config(**model_settings)
    serve = ServeConfig(**{k: settings[k] for k in SERVING_FIELDS}) if model_cls.denoises else None
    data = load_dataset(args.dataset, args.data_dir, seed=cfg.split_seed, split=cfg.split)  # planted: follows the seed
    from dimerec.distributed import rank

    def before_writing(data) -> None:  # train() has checked that the data splits
        for note in data_notes(data, cfg.protocol, cfg.split_seed) if rank() == 0 else ():
            print(f"note: {note}", file=sys.stderr)  # once, before training; config.json keeps them
        if args.overwrite and out.exists() and rank() == 0:  # under torchrun, rank 0 alone writes the run directory
            shutil.rmtree(out)

    _, _, metrics = train_with_config(args.model, data, cfg, model_settings, out=out, data_dir=args.data_dir,
                                      progress=not args.quiet, resume=args.resume,
                                      run_info={"command": "python -m dimerec " + shlex.join(argv)},
                                      before_writing=before_writing, serve=serve)
    return metrics, out


def train_from_argv(argv: list[str]) -> tuple[dict, Path]:
    """Train as `python -m dimerec train ARGV` does (argv without the leading "train"), without the CLI."""
    from dimerec.models import MODELS

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(argv)
    parser = OneLineParser(prog="python -m dimerec train")
    add_train_arguments(parser, known.model)
    args = parser.parse_args(argv)
    return train_from_args(args, MODELS[args.model], ["train", *argv])
