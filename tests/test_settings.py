"""Issue 31, item 1: every option of every model, and of training, is checked before anything is written, by the
one check (models.base.check_settings) that each config's fields declare: their type and their range."""
import dataclasses
import os
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from dimerec.cli import main
from dimerec.errors import DimeRecError
from dimerec.models import MODELS
from dimerec.models.base import Range, Settings, option, setting_kind
from dimerec.serving import ServeConfig, serving_of
from dimerec.trainer import TrainConfig, build_model

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {**{f"model {name}": model.Config for name, model in MODELS.items()}, "training": TrainConfig,
           "serving": ServeConfig}


def numeric_fields():
    """(title, config class, field, its type) of every int or float field of every config."""
    for title, cls in CONFIGS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, _ = setting_kind(hints[f.name])
            if kind in (int, float):
                yield title, cls, f, kind


NUMERIC = list(numeric_fields())


def planted_world():
    from dimerec.data import load_dataset

    return load_dataset("planted", seed=0)


def outside(bounds: Range, kind: type):
    """A value just outside the declared range."""
    step = 1 if kind is int else 0.5
    if bounds.at_least is not None:
        return bounds.at_least - step
    if bounds.above is not None:
        return bounds.above
    if bounds.at_most is not None:
        return bounds.at_most + step
    return bounds.below


def test_every_config_is_checked_when_it_is_made():
    assert all(issubclass(cls, Settings) for cls in CONFIGS.values())
    assert len(NUMERIC) > 50  # every model's sizes, counts, weights, steps and knobs, and training's


@pytest.mark.parametrize("title, cls, f, kind", NUMERIC, ids=[f"{t}:{f.name}" for t, _, f, _ in NUMERIC])
def test_a_value_outside_its_declared_range_is_one_dimerec_error_naming_the_flag(title, cls, f, kind):
    bounds = f.metadata["range"]
    value = outside(bounds, kind)
    with pytest.raises(DimeRecError) as info:
        cls(**{f.name: value})
    flag = "--" + f.name.replace("_", "-")
    assert str(info.value) == f"{flag} must be {bounds}; got {value!r}"


@pytest.mark.parametrize("title, cls, f, kind", NUMERIC, ids=[f"{t}:{f.name}" for t, _, f, _ in NUMERIC])
def test_a_number_of_the_wrong_kind_is_refused(title, cls, f, kind):
    for value, says in ([(2.5, "must be a whole number")] if kind is int else []) + [
            (float("nan"), "must be a finite number"), (True, "must be a finite number"), ("3", "must be a finite")]:
        with pytest.raises(DimeRecError, match=f"--{f.name.replace('_', '-')} {says}"):
            cls(**{f.name: value})


def test_a_numeric_option_without_a_range_cannot_be_declared():
    @dataclass
    class Forgetful(Settings):
        width: int = option(3, "no range declared")

    with pytest.raises(TypeError, match="Forgetful.width: a numeric option needs its range"):
        Forgetful()


@pytest.mark.parametrize("make, says", [
    (lambda: MODELS["sasrec"].Config(dim=63, n_heads=2), "--dim must be a multiple of --n-heads (2); got 63"),
    (lambda: MODELS["diffurec"].Config(dim=30, n_heads=4), "--dim must be a multiple of --n-heads (4); got 30"),
    (lambda: serving_of(build_model("dimerec", planted_world()), {"serve_start": 21}),
     "--serve-start must be at most --T (20); got 21"),
    (lambda: MODELS["dimerec"].Config(grw="yes"), "--grw must be true or false; got 'yes'"),
    (lambda: MODELS["dimerec"].Config(p_uncond=1.0), "--p-uncond must be at least 0 and below 1; got 1.0"),
    (lambda: TrainConfig(batch_size=None), "--batch-size must be set; got None"),
])
def test_settings_that_depend_on_each_other_are_one_line_too(make, says):
    with pytest.raises(DimeRecError) as info:
        make()
    assert str(info.value) == says


@pytest.mark.parametrize("model, flag, value", [
    ("comirec-sa", "--dim", "0"), ("comirec-sa", "--n-negatives", "0"), ("mind", "--n-interests", "0"),
    ("dimerec", "--serve-samples", "0"), ("dimerec", "--T", "0"), ("dimerec", "--noise-scale", "0"),
    ("sasrec", "--dropout", "1"), ("gru4rec", "--n-layers", "0"), ("multvae", "--total-anneal-steps", "0"),
    ("dreamrec", "--p-uncond", "-0.1"), ("diffurec", "--lambda-uncertainty", "-1"), ("comirec-dr", "--dim", "-4"),
])
def test_a_bad_model_option_is_one_line_and_writes_nothing(model, flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", model, "--dataset", "planted", "--quiet", "--max-steps", "2", "--out", str(out),
               flag, value])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    name = flag[2:].replace("-", "_")
    owner = MODELS[model].Config if name in typing.get_type_hints(MODELS[model].Config) else ServeConfig
    kind, _ = setting_kind(typing.get_type_hints(owner)[name])
    assert rc == 2 and err.startswith(f"error: {flag} must be ") and err.endswith(f"; got {kind(value)!r}\n")
    assert not out.exists()


def test_a_bad_model_option_with_overwrite_leaves_the_old_run_alone(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "pop", "--dataset", "planted", "--quiet", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    rc = main(["train", "--model", "sasrec", "--dataset", "planted", "--quiet", "--overwrite", "--out", str(run),
               "--dim", "63", "--n-heads", "2"])
    assert rc == 2 and "--dim must be a multiple of --n-heads" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_dim_0_through_the_module_prints_one_line_and_creates_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dimerec", "train", "--model", "comirec-sa", "--dataset", "planted",
                           "--dim", "0", "--out", str(tmp_path / "x")], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == "error: --dim must be at least 1; got 0\n"
    assert list(tmp_path.iterdir()) == []


def test_the_help_says_what_each_number_may_be(capsys):
    assert main(["train", "--model", "dimerec", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1); at least 1" in help_text  # --serve-samples
    assert "at least 0 and below 1" in help_text  # --p-uncond
