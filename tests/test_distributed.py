"""Under torchrun with several processes, the commands that write refuse with one line (no run directory
is written twice at once); with one process they run as usual."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dimerec.cli import main
from dimerec.errors import DimeRecError

REPO_ROOT = Path(__file__).resolve().parent.parent


def torchrun_env(world_size: int, rank: int) -> dict:
    return {**os.environ, "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def test_train_under_two_processes_refuses_in_one_line(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dimerec", "train", "--model", "pop", "--dataset", "planted",
                           "--quiet", "--out", str(out)], env=torchrun_env(2, 1), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: `train` runs in one process, but torchrun started 2 (WORLD_SIZE=2, RANK=1)")
    assert not out.exists()


@pytest.mark.parametrize("argv", [["reproduce", "table1", "--dataset", "planted", "--quick"],
                                  ["evaluate", "RUN"], ["bench"]])
def test_other_writing_commands_refuse_too(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main([str(tmp_path / a) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "torchrun started 3" in err
    assert list(tmp_path.iterdir()) == []


def test_train_function_refuses_under_two_processes(planted_small, tmp_path, monkeypatch):
    from dimerec.models.pop import MostPopular
    from dimerec.trainer import TrainConfig, train

    monkeypatch.setenv("WORLD_SIZE", "2")
    model = MostPopular(planted_small.n_items, planted_small.max_len, MostPopular.Config())
    with pytest.raises(DimeRecError, match="torchrun started 2"):
        train(model, planted_small, TrainConfig(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_one_process_under_torchrun_trains_as_usual(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "run"
    assert main(["train", "--model", "pop", "--dataset", "planted", "--quiet", "--out", str(out)]) == 0
    assert (out / "metrics.json").exists()


def test_real_torchrun_with_two_processes_refuses(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in torchrun_env(1, 0).items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK",
                                                                     "LOCAL_WORLD_SIZE", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "dimerec", "train", "--model", "pop", "--dataset", "planted", "--quiet",
                           "--out", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: `train` runs in one process, but torchrun started 2" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
