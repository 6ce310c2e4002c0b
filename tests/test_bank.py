"""The bank (runs.Bank): reproduce's runs survive a session whose runs folder is not kept, finished ones reused and
unfinished ones resumed; a run in the bank only ever moves forward."""
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import dimerec.data.planted as planted
from dimerec.cli import main
from dimerec.errors import DimeRecError
from dimerec.runs import Bank, load_run, replace_atomically, served_source
from dimerec.trainer import train_model


@pytest.fixture(scope="module")
def small_world():
    full_size = planted.make_planted
    with pytest.MonkeyPatch.context() as patch:  # speed: 200 users
        patch.setattr(planted, "make_planted", lambda seed=0, **world: full_size(**{"n_users": 200, **world},
                                                                                 seed=seed))
        yield


def test_a_banked_reproduction_is_restored_on_a_fresh_machine_and_trains_nothing(tmp_path, small_world,
                                                                               monkeypatch):
    runs, results, bank = tmp_path / "runs", tmp_path / "results", tmp_path / "bank"
    argv = ["reproduce", "dimerec", "--dataset", "planted", "--quick", "--runs", str(runs), "--results",
            str(results), "--bank", str(bank)]
    assert main(argv) == 0
    first = pd.read_csv(results / "dimerec_planted.csv")
    # the Command line says what computed the table, not where it was written (cli.without_results_flag)
    assert f"Command: `python -m dimerec reproduce dimerec --dataset planted --quick --runs {runs} --bank {bank}`" \
        in (results / "dimerec_planted.md").read_text()
    trained = runs / "planted" / "dimerec-ours" / "seed0"
    kept = tmp_path / "kept"
    shutil.copytree(trained, kept)
    assert sorted(p.name for p in (bank / "planted" / "dimerec-ours" / "seed0").iterdir()) == [
        "best.pt", "config.json", "losses.csv.gz", "metrics.json", "step_metrics.json", "valid.csv"]
    shutil.rmtree(runs)  # the next session's machine: no runs folder

    def no_training(argv, out):
        raise AssertionError(f"{out} was trained again")

    monkeypatch.setattr("dimerec.reproduce.runner._train", no_training)
    assert main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(results / "dimerec_planted.csv"), first)
    for name in ("losses.csv", "valid.csv", "best.pt", "metrics.json", "step_metrics.json", "config.json"):
        assert filecmp.cmp(trained / name, kept / name, shallow=False), name  # byte for byte, losses unzipped
    assert not (trained / "last.pt").exists()  # a finished run's resume state is not banked
    # restored into another runs folder, a served row still scores the checkpoint beside it, not the old folder's
    elsewhere = tmp_path / "elsewhere"
    assert main([*argv[:argv.index("--runs") + 1], str(elsewhere), *argv[argv.index("--runs") + 2:]]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(results / "dimerec_planted.csv"), first)
    served = elsewhere / "planted" / "dimerec-ours-serve-mean" / "seed0"
    assert served_source(served, json.loads((served / "metrics.json").read_text())["served_from"]) == (
        elsewhere / "planted" / "dimerec-ours" / "seed0")


def test_the_bank_keeps_an_unfinished_run_resumable_and_never_moves_a_run_backwards(tmp_path, small_world):
    runs = tmp_path / "runs"
    finished_run = runs / "planted" / "control" / "seed0"
    train_model("dimerec-nodiff", "planted", out=finished_run, max_steps=20, eval_every=10, valid_max_rows=50)
    unfinished = runs / "planted" / "control" / "seed1"
    shutil.copytree(finished_run, unfinished)
    (unfinished / "metrics.json").unlink()  # stopped after its last checkpoint (step 20), before finishing
    bank = Bank(tmp_path / "bank", runs)
    assert bank.save(unfinished) and not bank.save(unfinished)  # banked once while it stands still
    held = bank.of(unfinished)
    assert (held / "last.pt").is_file() and not (held / "metrics.json").exists()
    assert [(r["state"], r["device"]) for r in bank.summary()] == [("resumable", "cpu")]
    elsewhere = Bank(tmp_path / "bank2", runs)
    elsewhere.save(unfinished)
    assert filecmp.cmp(held / "losses.csv.gz", elsewhere.of(unfinished) / "losses.csv.gz", shallow=False)

    behind = tmp_path / "behind"  # the same run at an earlier checkpoint: the bank keeps the further one
    train_model("dimerec-nodiff", "planted", out=behind, max_steps=10, eval_every=10, valid_max_rows=50)
    (behind / "metrics.json").unlink()
    shutil.rmtree(unfinished)
    shutil.copytree(behind, unfinished)
    assert not bank.save(unfinished)
    assert json.loads(torch.load(held / "last.pt", weights_only=True)["state"])["step"] == 20

    fresh = Bank(bank.folder, tmp_path / "fresh")  # a new machine: restored with its last.pt, losses unzipped
    assert fresh.restore(busy=lambda run: True) == []  # never under the feet of a process training the run
    assert fresh.restore() == [fresh.runs / "planted" / "control" / "seed1"]
    restored = fresh.runs / "planted" / "control" / "seed1"
    assert filecmp.cmp(restored / "last.pt", finished_run / "last.pt", shallow=False)
    assert (restored / "losses.csv").read_text() == (finished_run / "losses.csv").read_text()
    assert fresh.restore() == []  # a run folder that has its own last.pt keeps it

    shutil.rmtree(unfinished)
    shutil.copytree(finished_run, unfinished)  # the run finished: the bank takes it, without its resume state
    assert bank.save(unfinished)
    assert (held / "metrics.json").is_file() and not (held / "last.pt").exists()
    assert [r["state"] for r in bank.summary()] == ["finished"] and not bank.save(unfinished)
    assert fresh.restore() == [restored] and not (restored / "last.pt").exists()


def test_a_checkpoint_above_the_limit_stays_out_of_the_bank_and_a_run_restored_without_it_says_so(
        tmp_path, small_world):
    runs = tmp_path / "runs"
    finished_run = runs / "planted" / "control" / "seed0"
    train_model("dimerec-nodiff", "planted", out=finished_run, max_steps=20, eval_every=10, valid_max_rows=50)
    unfinished = runs / "planted" / "control" / "seed1"
    shutil.copytree(finished_run, unfinished)
    (unfinished / "metrics.json").unlink()
    size_mb = (finished_run / "best.pt").stat().st_size / 1e6
    roomy = Bank(tmp_path / "roomy", runs, checkpoint_limit_mb=2 * size_mb)
    assert roomy.save(finished_run) and (roomy.of(finished_run) / "best.pt").is_file()
    bank = Bank(tmp_path / "bank", runs, checkpoint_limit_mb=size_mb / 2)
    assert bank.save(finished_run) and not bank.save(unfinished)  # a resumable run's last.pt is bigger still
    held = bank.of(finished_run)
    assert sorted(p.name for p in held.iterdir()) == [
        "config.json", "losses.csv.gz", "metrics.json", "valid.csv"]
    assert not bank.of(unfinished).exists()
    assert [r["state"] for r in bank.summary()] == ["record only"]

    fresh = Bank(bank.folder, tmp_path / "fresh")
    restored = fresh.restore()
    assert restored == [tmp_path / "fresh" / "planted" / "control" / "seed0"]
    with pytest.raises(DimeRecError, match="came from the bank, which keeps no checkpoint above") as err:
        load_run(restored[0])
    assert str(restored[0]) in str(err.value) and "\n" not in str(err.value)


def test_the_bank_command_banks_the_runs_and_lists_them_or_names_a_missing_folder(tmp_path, small_world, capsys):
    runs = tmp_path / "runs"
    train_model("pop", "planted", out=runs / "planted" / "mostpopular" / "seed0")
    assert main(["bank", "--runs", str(runs), "--bank", str(tmp_path / "bank")]) == 0
    out = capsys.readouterr().out
    assert "banked 1 run(s)" in out and "planted/mostpopular/seed0 finished" in out
    assert (tmp_path / "bank" / "planted" / "mostpopular" / "seed0" / "metrics.json").is_file()
    assert "| planted/mostpopular/seed0 | finished |" in (tmp_path / "bank" / "STATUS.md").read_text()
    assert main(["bank", "--runs", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere is not a folder" in err


def test_the_bank_records_the_data_folder_relative_to_the_repository(tmp_path, monkeypatch):
    from dimerec.runs import _portable_paths, save_atomic

    monkeypatch.chdir(tmp_path / ".")
    banked = tmp_path / "bank" / "ml-1m" / "run" / "seed0"
    banked.mkdir(parents=True)
    data = str(tmp_path.parent / "shared" / "data")
    config = {"data_dir": data, "command": f"python -m dimerec train --data-dir {data}"}
    (banked / "config.json").write_text(json.dumps(config))
    save_atomic({"model": {}, "config": json.dumps(config)}, banked / "best.pt")
    _portable_paths(banked)
    for text in ((banked / "config.json").read_text(),
                 torch.load(banked / "best.pt", weights_only=True)["config"]):
        assert json.loads(text)["data_dir"] == "../shared/data" and str(tmp_path.parent) not in text


def test_a_served_run_finds_its_source_beside_it_or_where_an_older_record_named_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for root in ("runs", "moved"):
        (tmp_path / root / "ml-1m" / "dimerec-ours" / "seed0").mkdir(parents=True)
        (tmp_path / root / "ml-1m" / "dimerec-ours" / "seed0" / "config.json").write_text("{}")
    served = Path("moved") / "ml-1m" / "ours-t-2" / "seed0"
    assert served_source(served, "../../dimerec-ours/seed0") == Path("moved/ml-1m/dimerec-ours/seed0")
    # before served runs recorded their source beside them, they named it from the working directory
    assert served_source(served, "runs/ml-1m/dimerec-ours/seed0") == Path("runs/ml-1m/dimerec-ours/seed0")


def test_a_served_row_that_named_its_source_from_the_working_directory_is_banked_beside_it(tmp_path, monkeypatch):
    """Rows served before `served_from` was relative to the row's own folder are mended as they are banked, so the
    bank restores them into any runs folder (the mechanism, not one-off scripts over the bank)."""
    monkeypatch.chdir(tmp_path)
    source, served = Path("runs/ml-1m/dimerec-ours/seed0"), Path("runs/ml-1m/ours-t-2/seed0")
    for run, record in ((source, {"train_minutes": 1.0}),
                        (served, {"train_minutes": 1.0, "served_from": str(source)})):  # the old, cwd-relative form
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(record))
    (source / "config.json").write_text("{}")
    bank = Bank(Path("bank"), Path("runs"))
    assert bank.save(served)
    banked = json.loads((bank.of(served) / "metrics.json").read_text())
    assert banked == {"train_minutes": 1.0, "served_from": "../../dimerec-ours/seed0"}
    assert json.loads((served / "metrics.json").read_text())["served_from"] == str(source)  # the run is untouched
    # already relative, or a source this machine lacks: banked as recorded
    unknown = Path("runs/ml-1m/ours-t-5/seed0")
    unknown.mkdir(parents=True)
    (unknown / "metrics.json").write_text(json.dumps({"served_from": "../../elsewhere/seed0"}))
    assert bank.save(unknown)
    assert json.loads((bank.of(unknown) / "metrics.json").read_text())["served_from"] == "../../elsewhere/seed0"


def test_two_processes_writing_one_file_at_once_do_not_share_a_temporary_file(tmp_path):
    """Two `reproduce` calls that restore one banked run write the same files at the same moment; each must write
    its own temporary file, or the first rename leaves the second with nothing to rename (seen in session 25)."""
    target = tmp_path / "losses.csv"
    other_process = ("from pathlib import Path; from dimerec.runs import replace_atomically; "
                     f"replace_atomically(Path({str(target)!r}), lambda tmp: tmp.write_text('theirs'))")

    def write_while_another_process_writes(tmp: Path):
        tmp.write_text("ours")
        subprocess.run([sys.executable, "-c", other_process], check=True, cwd=Path(__file__).parents[1])

    replace_atomically(target, write_while_another_process_writes)
    assert target.read_text() == "ours"  # the last rename wins, and it is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.csv"]  # no temporary file left behind
