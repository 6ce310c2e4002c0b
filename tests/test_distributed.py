"""Training under torchrun: 2 gloo processes on the planted world train one model data-parallel; rank 0
alone writes the run directory; the numbers are those of one process up to a stated tolerance (exactly
those with one process under torchrun); a killed 2-process run resumes and finishes. The commands that
stay single-process refuse in one line under torchrun with several processes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dimerec.cli import main
from dimerec.processes import descendants

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TRAIN = ["train", "--model", "comirec-sa", "--dataset", "planted", "--dim", "16", "--quiet"]
# |HR@50 of 2 processes - HR@50 of 1| after 30 steps of the same global batch: seen 0.009, the spread of
# 1-process runs over seeds 0-2 (0.551-0.559)
HR_TOLERANCE = 0.03


def torchrun_cmd(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "dimerec", *args]


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(nproc, args), env=clean_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    proc = torchrun(2, [*TRAIN, "--max-steps", "30", "--out", str(tmp / "run")], tmp)
    return proc, tmp / "run"


def test_two_processes_train_one_model_and_rank0_alone_writes(two_process_run):
    proc, run = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "last.pt", "losses.csv",
                                                     "metrics.json", "valid.csv"]  # no leftover .tmp
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 256,
                                     "rank_batch_size": 128}
    # one writer: one row per step, one validation row, the metrics printed once
    assert len((run / "losses.csv").read_text().splitlines()) == 1 + 30
    assert len((run / "valid.csv").read_text().splitlines()) == 1 + 1
    assert proc.stdout.count("run directory:") == 1
    assert json.loads((run / "metrics.json").read_text())["steps"] == 30
    last = torch.load(run / "last.pt", weights_only=True)
    assert len(last["torch_rng_ranks"]) == 2 and not torch.equal(*last["torch_rng_ranks"])  # per-rank noise


def test_same_seed_same_numbers_for_two_processes(two_process_run, tmp_path):
    _, run = two_process_run
    proc = torchrun(2, [*TRAIN, "--max-steps", "30", "--out", str(tmp_path / "again")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "again" / "losses.csv").read_text() == (run / "losses.csv").read_text()
    again, first = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "again", run))
    assert (again["valid"], again["test"]) == (first["valid"], first["test"])


def test_two_processes_match_one_within_tolerance_and_one_under_torchrun_exactly(two_process_run, tmp_path):
    _, run = two_process_run
    assert main([*TRAIN, "--max-steps", "30", "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((run / "metrics.json").read_text())
    assert abs(two["valid"]["HR@50"] - one["valid"]["HR@50"]) <= HR_TOLERANCE
    proc = torchrun(1, [*TRAIN, "--max-steps", "30", "--out", str(tmp_path / "one-torchrun")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    under = json.loads((tmp_path / "one-torchrun" / "metrics.json").read_text())
    assert (under["valid"], under["test"]) == (one["valid"], one["test"])
    assert "distributed" not in json.loads((tmp_path / "one-torchrun" / "config.json").read_text())


def rank_pids(torchrun_pid: int) -> dict[int, int]:
    """{RANK: pid} of the worker processes under torchrun's process (read from /proc)."""
    out = {}
    for pid in descendants(torchrun_pid):
        try:
            env = dict(v.split("=", 1) for v in (Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                                                 .split("\0")) if "=" in v)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # it ended while we read
        if "RANK" in env and "-m" in command:
            out[int(env["RANK"])] = pid
    return out


@pytest.mark.parametrize("killed", [0, 1])
def test_killed_rank_then_resumed_two_process_run_finishes(killed, tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN, "--max-steps", "80", "--eval-every", "10", "--patience", "100", "--out", str(run)]
    proc = subprocess.Popen(torchrun_cmd(2, args), env=clean_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ranks = {}
    deadline = time.monotonic() + 300
    try:
        while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ranks = rank_pids(proc.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[killed], signal.SIGKILL)  # one rank dies mid-training: torchrun stops the other
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks.values()), "a rank outlived torchrun"
    assert (run / "last.pt").exists() and not (run / "metrics.json").exists()
    first = [r.split(",")[1] for r in (run / "valid.csv").read_text().splitlines()[1:]]
    resumed = torchrun(2, [*args, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 80
    rows = [r.split(",")[1] for r in (run / "valid.csv").read_text().splitlines()[1:]]
    assert rows[:len(first)] == first and rows[-1] == str(metrics["steps"])


@pytest.mark.parametrize("argv", [["reproduce", "table1", "--dataset", "planted", "--quick"],
                                  ["evaluate", "RUN"]])
def test_single_process_commands_refuse_under_several(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert main([str(tmp_path / a) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: `{argv[0]}` runs in one process, but torchrun started 3 (WORLD_SIZE=3, RANK=1)")
    assert list(tmp_path.iterdir()) == []


def test_reproduce_under_real_torchrun_refuses(tmp_path):
    proc = torchrun(2, ["reproduce", "table1", "--dataset", "planted", "--quick", "--runs", str(tmp_path / "runs"),
                        "--results", str(tmp_path / "results")], tmp_path)
    assert proc.returncode != 0
    assert "error: `reproduce` runs in one process, but torchrun started 2" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
