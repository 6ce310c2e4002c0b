"""`--device`: training and scoring on a GPU. The CPU tests run everywhere; the GPU tests run only where
PyTorch sees a GPU (never in CI, whose machines have none) and were run on a lent H100 (see docs/protocols.md)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dimerec.errors import DimeRecError
from dimerec.evaluate import evaluate, model_device
from dimerec.models import MODELS
from dimerec.trainer import TrainConfig, check_device, train_model

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU that PyTorch can use")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu"])
def test_a_device_that_is_not_cpu_or_cuda_is_refused_naming_it(name):
    with pytest.raises(DimeRecError, match=f"--device must be cpu, cuda or cuda:N; got '{name}'"):
        TrainConfig(device=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_machine_without_a_gpu_is_refused_before_anything_trains(tmp_path):
    with pytest.raises(DimeRecError, match="no GPU that PyTorch can use.*use --device cpu"):
        train_model("comirec-sa", out=tmp_path / "run", max_steps=5, device="cuda")
    assert not (tmp_path / "run").exists()


def test_the_run_records_its_device(tmp_path):
    _, _, metrics = train_model("pop", out=tmp_path, valid_max_rows=100)
    assert json.loads((tmp_path / "config.json").read_text())["train_config"]["device"] == "cpu"
    assert metrics["valid"]["HR@50"] > 0


@needs_gpu
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_and_scores_on_a_gpu(name, tmp_path):
    model, data, metrics = train_model(name, out=tmp_path, max_steps=20, valid_max_rows=200, final_max_rows=200,
                                       device="cuda")
    assert model_device(model).type == "cuda"
    assert all(np.isfinite(v) for v in metrics["test"].values())
    from dimerec.analysis import category_diversity
    assert category_diversity(model, data, data.split(0).test, max_rows=100)["rows"] == 100
    # the checkpoint loads on the CPU (map_location), as the app and the analysis read it
    from dimerec.trainer import load_run
    cpu_model, _, config = load_run(tmp_path)
    assert model_device(cpu_model).type == "cpu" and config["train_config"]["device"] == "cuda"


@needs_gpu
@pytest.mark.parametrize("name", ["dimerec", "diffurec", "gru4rec"])
def test_the_same_seed_repeats_its_numbers_on_a_gpu(name, tmp_path):
    runs = [train_model(name, out=tmp_path / f"run{i}", max_steps=30, valid_max_rows=300, device="cuda")[2]
            for i in range(2)]
    assert runs[0]["valid"] == runs[1]["valid"] and runs[0]["test"] == runs[1]["test"]


@needs_gpu
@pytest.mark.parametrize("name", ["dimerec", "diffurec", "sasrec"])
def test_the_same_weights_score_alike_on_the_gpu_and_the_cpu(name, planted_small):
    """The sampler draws its noise on the CPU, so only float rounding separates the two devices' scores."""
    model, data, _ = train_model(name, planted_small, max_steps=60, valid_max_rows=300)
    users = data.split(0).valid
    on_cpu = evaluate(model, data, users, seed=0, max_rows=500)["final"]
    on_gpu = evaluate(model.to("cuda"), data, users, seed=0, max_rows=500)["final"]
    for metric, value in on_cpu.items():
        assert abs(on_gpu[metric] - value) < 0.02, (metric, value, on_gpu[metric])


def test_check_device_accepts_the_cpu():
    assert check_device("cpu") == torch.device("cpu")


def test_a_table_names_the_models_whose_runs_trained_on_a_gpu(tmp_path):
    from dimerec.reproduce import device_note

    results = []
    for label, device in (("SASRec", "cpu"), ("DiffuRec", "cuda"), ("DiffuRec", "cuda")):
        run = tmp_path / f"{label}-{len(results)}"
        run.mkdir()
        config = json.loads((Path(__file__).parent / "fixtures" / "old_configs" / "dimerec-planted.json").read_text())
        config["train_config"]["device"] = device  # a run's config.json, read as runs.read_config reads it
        (run / "config.json").write_text(json.dumps(config))
        results.append({"label": label, "run": str(run)})
    note = device_note(results)
    assert note[0] == "" and note[1].startswith("Trained with `--device cuda` (a GPU): DiffuRec;") and len(note) == 2
    assert device_note(results[:1]) == []


def test_the_gpus_plain_attention_kernel_is_scoped_to_the_gpu_work():
    """Deterministic attention on a GPU must not outlive the GPU's block: the same switches pick the CPU's kernel.
    Setting them needs no GPU, so this runs everywhere."""
    from dimerec.trainer import attention_kernels

    with attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    with attention_kernels(torch.device("cpu")):
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()


def test_training_on_the_cpu_keeps_the_cpus_fused_attention_kernel(tmp_path):
    """The GPU's deterministic-attention switches also govern the CPU's kernel: a CPU run must leave them on
    (else its numbers change and attention runs 3x slower)."""
    train_model("sasrec", out=tmp_path, max_steps=2, valid_max_rows=50)
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
