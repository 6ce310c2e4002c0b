"""Every entry of MODELS honours the one contract (dimerec.models.base.check_contract), on the CPU.

For each registered model: a few training steps on the planted world through `train_model` (what the CLI
runs), a finite loss, user vectors of the declared shape, the same seed giving the same metrics, the run
loading back through the one loader (`trainer.load_run`), and every page of the app opening on it without an
exception (issue 18, item 3; issue 17). Only the GPU tests looped over every model before, which is how a
DreamRec run crashing the app went unseen.
"""
import json
import math
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dimerec.diffusion import NoiseSchedule
from dimerec.errors import DimeRecError
from dimerec.models import MODELS
from dimerec.models.base import ContractError, Recommender, check_contract
from dimerec.trainer import TrainConfig, load_run, train_model

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN = str(REPO_ROOT / "app" / "main.py")
PAGES = ("tour", "denoising", "interests", "training", "steps", "what_if", "results")
# A few steps, small validations; the diffusion baselines get short chains so their serving stays cheap.
BUDGET = dict(max_steps=6, eval_every=3, valid_max_rows=150, final_max_rows=150)
SHORT_CHAINS = {"dreamrec": {"T": 20}, "diffurec": {"T": 8}, "dimerec": {"T": 8}}


def train_tiny(name: str, out: Path, seed: int = 0) -> dict:
    _, _, metrics = train_model(name, "planted", out=out, seed=seed, **BUDGET, **SHORT_CHAINS.get(name, {}))
    return metrics


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """One tiny run of every registered model, in a runs/ folder the app is pointed at."""
    root = tmp_path_factory.mktemp("runs")
    with torch.random.fork_rng():
        for name in MODELS:
            train_tiny(name, root / name)
    return root


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_and_honours_the_contract(name, runs_root, tmp_path):
    run = runs_root / name
    model, data, config = load_run(run)
    assert type(model) is MODELS[name] and config["model"] == name
    hist = torch.from_numpy(data.sequences[0][-data.max_len:][None])
    hist = torch.nn.functional.pad(hist, (data.max_len - hist.shape[1], 0), value=data.pad_id)
    hist = torch.cat([hist, torch.full_like(hist, data.pad_id)])  # a real history and an empty one
    check_contract(model, hist)
    users = model.user_vectors(hist)
    assert users.shape[0] == 2 and users.shape[2] == model.item_vectors().shape[1]
    if model.trainable:
        losses = (run / "losses.csv").read_text().splitlines()
        assert len(losses) == 1 + BUDGET["max_steps"]
        assert all(math.isfinite(float(v)) for line in losses[1:] for v in line.split(",")[2:])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == (BUDGET["max_steps"] if model.trainable else 0)
    assert (run / "step_metrics.json").exists() == model.denoises
    # the same seed repeats every number
    again = train_tiny(name, tmp_path / "again")
    assert again["valid"] == metrics["valid"] and again["test"] == metrics["test"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_page_opens_on_a_run_of_every_model(name, runs_root, monkeypatch):
    monkeypatch.setenv("DIMEREC_RUNS", str(runs_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for page in PAGES:
        at = AppTest.from_file(MAIN, default_timeout=120)
        at.query_params["run"] = f"runs/{name}"
        if page != "tour":
            at.switch_page(f"app_pages/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = " ".join(e.value for e in at.error)
        assert "Traceback" not in shown, (page, shown)


class _WrongShape(Recommender):
    """Breaks the contract: user vectors [B, d] instead of [B, K, d]."""
    name = "wrong-shape"

    def __init__(self):
        super().__init__(5, 3, None)
        self.table = torch.nn.Parameter(torch.randn(5, 4))

    def item_vectors(self):
        return self.table

    def user_vectors(self, hist):
        return torch.zeros(hist.shape[0], 4)


class _SaysItDenoisesButHasNoChain(_WrongShape):
    name = "no-chain"
    denoises = True
    chain_space = "sphere"

    def user_vectors(self, hist):
        return torch.zeros(hist.shape[0], 1, 4)


def test_the_contract_check_names_the_model_and_the_shape():
    hist = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ContractError, match=r"wrong-shape: user_vectors\(\) must be \[B=2, K, d=4\], got \[2, 4\]"):
        check_contract(_WrongShape(), hist)
    with pytest.raises(ContractError, match="no-chain has no reverse diffusion process"):
        check_contract(_SaysItDenoisesButHasNoChain(), hist)


@pytest.mark.parametrize("make, flag, value", [
    (lambda: MODELS["gru4rec"].Config(output_table="tied"), "--output-table", "tied"),
    (lambda: MODELS["sasrec"].Config(loss_kind="bce"), "--loss-kind", "bce"),
    (lambda: MODELS["comirec-sa"].Config(negative_sampler="batch"), "--negative-sampler", "batch"),
    (lambda: MODELS["dreamrec"].Config(denoiser="unet"), "--denoiser", "unet"),
    (lambda: MODELS["diffurec"].Config(schedule="cosine"), "--schedule", "cosine"),
    (lambda: MODELS["dimerec"].Config(gem="transformer"), "--gem", "transformer"),
    (lambda: MODELS["dimerec"].Config(preset="mine"), "--preset", "mine"),
    (lambda: MODELS["dimerec"].Config(reverse_sigma="sqrt-beta"), "--reverse-sigma", "sqrt-beta"),
    (lambda: TrainConfig(split="by-time"), "--split", "by-time"),
    (lambda: NoiseSchedule(20, "quadratic"), "--schedule", "quadratic"),
])
def test_a_bad_choice_is_one_dimerec_error_naming_the_flag_and_the_value(make, flag, value):
    """Every Literal setting is checked by the one errors.check_choices: the same error type and message shape
    for a model's config, the training config and the diffusion they build."""
    with pytest.raises(DimeRecError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{flag} must be one of ") and message.endswith(f"; got {value!r}")
    assert "\n" not in message
