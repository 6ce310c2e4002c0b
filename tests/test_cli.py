"""The command line, in process (dimerec.cli.main) and once through `python -m dimerec`:
user mistakes are one `error:` line with exit status 2, and a run directory round-trips."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dimerec.cli import main
from dimerec.errors import DimeRecError
from dimerec.evaluate import sampled_metrics
from dimerec.models import MODELS
from dimerec.models.comirec_sa import ComiRecSA
from dimerec.runs import load_run

REPO_ROOT = Path(__file__).resolve().parent.parent


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line a user mistake prints (no traceback, nothing else)."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`train --model comirec-sa --dataset planted --max-epochs 1` (the full planted world; d=16 for speed)."""
    run_dir = tmp_path_factory.mktemp("cli") / "sa-run"
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--max-epochs", "1", "--dim", "16",
               "--quiet", "--out", str(run_dir)])
    return rc, run_dir


def test_train_writes_the_run_directory(cli_run):
    rc, run_dir = cli_run
    assert rc == 0
    for name in ("config.json", "losses.csv", "metrics.json", "best.pt", "valid.csv", "last.pt"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["model"], metrics["dataset"], metrics["epochs"]) == ("comirec-sa", "planted", 1)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_config"]["max_epochs"] == 1
    assert config["model_config"]["dim"] == 16 and config["model_config"]["n_interests"] == 4
    assert len((run_dir / "losses.csv").read_text().splitlines()) == 1 + metrics["steps"]
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert json.loads(best["config"]) == config and json.loads(best["state"])["step"] == metrics["steps"]


def test_train_into_an_existing_run_is_refused(cli_run, capsys):
    _, run_dir = cli_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.suffix in (".json", ".csv")}
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--max-epochs", "1", "--quiet",
               "--out", str(run_dir)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert str(run_dir) in line and "--resume" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.suffix in (".json", ".csv")} == before


def test_evaluate_reprints_the_same_metrics_into_its_own_file_and_leaves_metrics_json(cli_run, capsys):
    _, run_dir = cli_run
    original = json.loads((run_dir / "metrics.json").read_text())
    tampered = {**original, "test": {k: -1.0 for k in original["test"]}}
    (run_dir / "metrics.json").write_text(json.dumps(tampered))
    capsys.readouterr()
    try:
        assert main(["evaluate", str(run_dir)]) == 0
        out = capsys.readouterr().out
        assert json.loads((run_dir / "metrics.json").read_text()) == tampered  # the training run's record
        written = run_dir / "metrics-eval-next-item-unmasked-torch.json"
        again = json.loads(written.read_text())
        assert (again["valid"], again["test"]) == (original["valid"], original["test"])
        training = ("steps", "epochs_trained", "stopped_by", "sampling", "train_minutes")
        assert {k: again[k] for k in training} == {k: original[k] for k in training}
        assert f"written to {written}" in out and "comirec-sa on planted" in out
        assert f"{original['test']['HR@50'] * 100:.2f}" in out and f"{original['valid']['NDCG@10'] * 100:.2f}" in out
        assert f"{original['test']['MRR@10'] * 100:.2f}" in out
        assert f"{original['test']['AveragePopularity@50']:.2f}" in out  # a count, printed as it is (not in %)
        assert main(["evaluate", str(run_dir), "--mask-seen", "--protocol", "future"]) == 0
        masked = json.loads((run_dir / "metrics-eval-future-masked-torch.json").read_text())
        assert (masked["protocol"], masked["mask_seen"]) == ("future", True)
        assert json.loads((run_dir / "metrics.json").read_text()) == tampered
    finally:
        (run_dir / "metrics.json").write_text(json.dumps(original))


def test_evaluate_with_another_seed_scores_other_chains_into_its_own_file(tmp_path, capsys):
    """`evaluate --seed N` reseeds the scoring alone (a chain's random starts): the same seed gives the same
    numbers, another seed other numbers for a model that samples, each in a file that names it; the run's own
    seed writes the run's file, and metrics.json is left alone."""
    import shutil

    run = tmp_path / "dimerec-planted"
    shutil.copytree(Path(__file__).resolve().parent.parent / "app" / "default_runs" / "dimerec-planted", run)
    before = (run / "metrics.json").read_bytes()
    reseeded_file = run / "metrics-eval-next-item-unmasked-torch-seed-7.json"
    assert main(["evaluate", str(run), "--seed", "7"]) == 0
    first = json.loads(reseeded_file.read_text())
    for seed in ("7", "0"):
        assert main(["evaluate", str(run), "--seed", seed]) == 0
    out = capsys.readouterr().out
    reseeded = json.loads(reseeded_file.read_text())
    assert reseeded["test"] == first["test"]  # the same seed, the same numbers
    own = json.loads((run / "metrics-eval-next-item-unmasked-torch.json").read_text())
    original = json.loads(before)
    assert reseeded["seed"] == 7 and own["seed"] == 0 and "seed 7" in out
    assert own["test"] == original["test"]  # the run's own seed scores as training did
    assert reseeded["test"] != own["test"]  # one chain from other random starts ranks otherwise
    assert (run / "metrics.json").read_bytes() == before
    assert main(["evaluate", str(run), "--seed", "7", "--sampled-negatives", "100"]) == 0
    assert json.loads((run / "metrics-sampled-100-seed-7.json").read_text())["seed"] == 7


def test_evaluate_sampled_writes_its_own_file_and_keeps_metrics_json(cli_run, capsys):
    _, run_dir = cli_run
    before = (run_dir / "metrics.json").read_bytes()
    assert main(["evaluate", str(run_dir), "--sampled-negatives", "100"]) == 0
    sampled = json.loads((run_dir / "metrics-sampled-100.json").read_text())
    assert sampled["protocol"] == "sampled-100"
    # training recorded the same check when it scored test, so Table 1 need not read the weights again
    assert json.loads(before)["sampled_test"] == sampled["test"]
    # the trained model beats MostPopular under the same sampled protocol (0.59 vs 0.21 when written)
    _, data, config = load_run(run_dir)
    split = data.split(config["train_config"]["split_seed"])
    pop = MODELS["pop"](data.n_items, data.max_len, MODELS["pop"].Config())
    pop.fit_statistics(data, split.train)
    assert sampled["test"]["HR@10"] > sampled_metrics(pop, data, split.test, 100, seed=0)["HR@10"] + 0.2
    assert f"HR@10 {100 * sampled['test']['HR@10']:.2f}" in capsys.readouterr().out
    assert (run_dir / "metrics.json").read_bytes() == before
    rc = main(["evaluate", str(run_dir), "--sampled-negatives", "0"])
    assert rc == 2 and "--sampled-negatives must be at least 1, got 0" in one_error_line(capsys.readouterr().err)
    # a refusal is the recorder's own (trainer.sampled_test), named by the run, and writes nothing
    rc = main(["evaluate", str(run_dir), "--sampled-negatives", str(data.n_items)])
    err = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run_dir) in err and f"{data.n_items} negatives cannot be drawn" in err
    assert not (run_dir / f"metrics-sampled-{data.n_items}.json").exists()


def test_evaluate_without_best_pt_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    rc = main(["evaluate", str(tmp_path)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(tmp_path / "best.pt") in line


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    rc = main(["train", "--model", "pop", "--dataset", "no-such-set", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "run")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "no-such-set" in line


def test_missing_data_file_names_the_path(tmp_path, capsys):
    (tmp_path / "ml-1m").mkdir()
    rc = main(["train", "--model", "pop", "--dataset", "ml-1m", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "run")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(tmp_path / "ml-1m" / "ratings.dat") in line


def test_bad_recbole_header_names_the_file(tmp_path, capsys):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").write_text("user_id:token\titem_id\n1\t2\n1\t3\n")
    rc = main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "run")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(folder / "shop.inter") in line and "item_id" in line


class AlwaysNaN(ComiRecSA):
    name = "always-nan"

    def loss(self, batch):
        return {k: v * float("nan") for k, v in super().loss(batch).items()}


def test_diverged_run_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(MODELS, AlwaysNaN.name, AlwaysNaN)
    rc = main(["train", "--model", "always-nan", "--dataset", "planted", "--quiet", "--out", str(tmp_path / "run")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and "nan" in line and "step 1" in line


def test_same_seed_same_run_within_one_process(tmp_path):
    """--seed seeds the model's initialisation too: two runs in one process are identical."""
    weights = []
    for name in ("a", "b"):
        assert main(["train", "--model", "comirec-sa", "--dataset", "planted", "--max-minutes", "1e-7", "--quiet",
                     "--seed", "0", "--out", str(tmp_path / name)]) == 0
        weights.append(torch.load(tmp_path / name / "best.pt", weights_only=True)["model"])
    assert (tmp_path / "a" / "losses.csv").read_text() == (tmp_path / "b" / "losses.csv").read_text()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.real_data
def test_datasets_lists_the_real_data(real_data_dir, capsys):
    assert main(["datasets", "--data-dir", str(real_data_dir)]) == 0
    rows = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["ml-1m"] == ["6040", "3706", "1000209"]
    assert rows["yoochoose"] == ["25694", "9514", "112307"]
    assert rows["kuairec"] == ["18418", "7261", "132341"]
    assert rows["planted"] == ["2000", "480", rows["planted"][2]]


def test_module_entry_point_exit_status_and_error_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dimerec", "evaluate", str(tmp_path / "nothing")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and str(tmp_path / "nothing" / "config.json") in line


# ---- issue 19: every bad input is one line, exit status 2, nothing written ----------------------------------

@pytest.mark.parametrize("flag, value", [
    ("--max-steps", "0"), ("--max-steps", "-5"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"),
    ("--batch-size", "0"), ("--max-epochs", "0"), ("--patience", "0"), ("--eval-every", "0"),
    ("--checkpoint-every", "-1"), ("--max-minutes", "0"), ("--max-minutes", "-2"), ("--valid-max-rows", "0"),
    ("--final-max-rows", "-10"), ("--seed", "-1"), ("--split-seed", "-3"), ("--max-steps", "abc"),
])
def test_bad_numeric_option_is_one_line_and_writes_nothing(flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--quiet", "--out", str(out), flag, value])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and flag in line and value in line
    assert not out.exists()


def test_bad_option_with_overwrite_leaves_the_old_run_alone(cli_run, capsys):
    _, run_dir = cli_run
    before = sorted(p.name for p in run_dir.iterdir())
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--quiet", "--overwrite",
               "--out", str(run_dir), "--max-steps", "0"])
    assert rc == 2 and "--max-steps must be at least 1; got 0" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize("argv, flag", [
    (["reproduce", "table1", "--dataset", "planted", "--seeds", "0"], "--seeds"),
    (["reproduce", "table1", "--dataset", "planted", "--max-minutes", "-1"], "--max-minutes"),
    (["reproduce", "table1", "--dataset", "planted", "--valid-max-rows", "0"], "--valid-max-rows"),
])
def test_bad_numeric_option_of_reproduce_is_one_line(argv, flag, tmp_path, capsys):
    rc = main([*argv, "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and flag in line
    assert list(tmp_path.iterdir()) == []


def test_the_dimerec_benchmark_refuses_zero_steps_in_one_line(tmp_path, capsys):
    from benchmarks.dimerec_bench import main as bench

    assert bench(["--steps", "0", "--out", str(tmp_path / "bench.json")]) == 2
    assert one_error_line(capsys.readouterr().err) == "error: --steps must be at least 1; got 0"
    assert list(tmp_path.iterdir()) == []


def copy_run(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for p in run_dir.iterdir():
        if p.is_file():
            (to / p.name).write_bytes(p.read_bytes())
    return to


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("damage", ["truncated", "empty", "random-bytes", "not-a-checkpoint"])
def test_evaluate_a_damaged_best_pt_is_one_line_naming_it(damage, cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    best = (run / "best.pt").read_bytes()
    if damage == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(2)}, run / "best.pt")
    else:
        (run / "best.pt").write_bytes({"truncated": best[:len(best) // 2], "empty": b"",
                                       "random-bytes": os.urandom(4096)}[damage])
    before = snapshot(run)
    rc = main(["evaluate", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "best.pt") in line and "retrain the run" in line
    assert snapshot(run) == before


def test_resume_from_a_truncated_last_pt_is_one_line_and_writes_nothing(cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    last = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(last[:len(last) // 3])
    before = snapshot(run)
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--max-epochs", "2", "--dim", "16",
               "--quiet", "--resume", "--out", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "last.pt") in line and "--overwrite" in line
    assert snapshot(run) == before


def write_inter(folder: Path, users: int, per_user: int = 3) -> None:
    folder.mkdir(parents=True)
    rows = [f"{u}\t{u * 10 + i}" for u in range(users) for i in range(per_user)]
    (folder / f"{folder.name}.inter").write_text("user_id:token\titem_id:token\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("users", [1, 9])
def test_a_dataset_too_small_to_split_is_refused_before_anything_is_written(users, tmp_path, capsys):
    write_inter(tmp_path / "data" / "tiny", users)
    out = tmp_path / "run"
    rc = main(["train", "--model", "pop", "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
               "--out", str(out)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(tmp_path / "data" / "tiny" / "tiny.inter") in line and "too small to split" in line
    assert "validation part 0 users" in line
    assert not out.exists()


def test_too_small_dataset_with_overwrite_keeps_the_old_run(cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    write_inter(tmp_path / "data" / "tiny", 1)
    before = snapshot(run)
    rc = main(["train", "--model", "pop", "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
               "--overwrite", "--out", str(run)])
    assert rc == 2 and "too small to split" in one_error_line(capsys.readouterr().err)
    assert snapshot(run) == before


def test_train_with_a_missing_data_dir_says_it_does_not_exist(tmp_path, capsys):
    rc = main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path / "nowhere"),
               "--out", str(tmp_path / "run")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"data directory {tmp_path / 'nowhere'} does not exist" in line
    assert not (tmp_path / "run").exists()


def test_datasets_on_a_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    rc = main(["datasets", "--data-dir", str(tmp_path / "nowhere")])
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert rc == 2 and f"data directory {tmp_path / 'nowhere'} does not exist" in line
    assert "planted" not in captured.out


# ---- issue 19: a run is tied to the data it was trained on -------------------------------------------------

def write_rows(folder: Path, rows: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.inter").write_text(
        "user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in rows))


def shop_rows() -> list[tuple[int, int]]:
    """30 users over 60 items (at least the top 50); user 0 has every item, so the item ids do not depend on the
    other users' rows."""
    return [(0, i) for i in range(60)] + [(u, (u * k) % 60) for u in range(1, 30) for k in (1, 2, 5)]


EVAL_FILE = "metrics-eval-next-item-unmasked-torch.json"


@pytest.fixture
def shop_run(tmp_path):
    write_rows(tmp_path / "data" / "shop", shop_rows())
    run = tmp_path / "run"
    assert main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path / "data"),
                 "--out", str(run)]) == 0
    return run, tmp_path / "data"


def test_the_run_records_its_data_fingerprint(shop_run):
    from dimerec.data import load_dataset

    run, data_dir = shop_run
    recorded = json.loads((run / "config.json").read_text())["data_fingerprint"]
    assert (recorded["n_items"], recorded["n_users"], recorded["n_interactions"]) == (60, 30, 60 + 29 * 3)
    assert re.fullmatch(r"[0-9a-f]{16}", recorded["digest"])
    assert recorded == load_dataset("shop", data_dir).fingerprint(0)  # the digests of the data it was trained on
    assert recorded["digest"] != load_dataset("shop", data_dir).fingerprint(1)["digest"]  # the split seed is in it
    assert json.loads(torch.load(run / "best.pt", weights_only=True)["data_fingerprint"]) == recorded


def test_evaluate_on_the_same_interactions_in_another_row_order_scores_the_same(shop_run, capsys):
    """Ids and the split are canonical (issue 19): rows written in another order are the same data."""
    run, data_dir = shop_run
    evaluated = main(["evaluate", str(run)]) == 0 and json.loads((run / EVAL_FILE).read_text())
    # the users' rows in reverse order (each user's own rows keep theirs: without timestamps they are the order)
    write_rows(data_dir / "shop", sorted(shop_rows(), key=lambda r: -r[0]))
    (run / EVAL_FILE).unlink()
    assert main(["evaluate", str(run)]) == 0
    assert json.loads((run / EVAL_FILE).read_text())["test"] == evaluated["test"]


@pytest.mark.parametrize("change, says", [
    ("an item renamed", "same sizes, but the item ids map to other items (were items renamed"),
    ("one user's items reordered", "same sizes and items, but the sequences differ in content or order"),
    ("one more item", "it has 61 items, the run's data had 60"),
    ("one more user", "it has 31 users/sequences, the run's data had 30"),
])
def test_evaluate_on_changed_data_is_refused_in_one_line(change, says, shop_run, capsys):
    run, data_dir = shop_run
    rows = shop_rows()
    if change == "an item renamed":
        rows = [(u, 99 if i == 59 else i) for u, i in rows]
    elif change == "one user's items reordered":
        rows = [r for r in rows if r[0] != 7] + [r for r in rows if r[0] == 7][::-1]
    elif change == "one more item":
        rows = rows + [(3, 99)]
    else:
        rows = rows + [(99, 1), (99, 2)]
    write_rows(data_dir / "shop", rows)
    before = snapshot(run)
    capsys.readouterr()
    rc = main(["evaluate", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and says in line and "'shop'" in line and str(run / "config.json") in line
    assert snapshot(run) == before


def test_a_run_from_before_canonical_ids_on_reordered_data_is_told_so(shop_run, capsys):
    run, data_dir = shop_run
    config = json.loads((run / "config.json").read_text())
    del config["data_fingerprint"]["id_order"]  # as written before issue 19's canonical order
    (run / "config.json").write_text(json.dumps(config))
    payload = torch.load(run / "best.pt", weights_only=True)
    payload["data_fingerprint"] = json.dumps(config["data_fingerprint"])
    torch.save(payload, run / "best.pt")
    write_rows(data_dir / "shop", [(u, 99 if i == 59 else i) for u, i in shop_rows()])
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    assert "the run predates canonical ids (issue 19)" in one_error_line(capsys.readouterr().err)


def as_before_fingerprints(run: Path, **config_changes) -> None:
    """Make `run` look like a run written before fingerprints (and apply `config_changes` to its config.json)."""
    config = json.loads((run / "config.json").read_text())
    del config["data_fingerprint"]
    (run / "config.json").write_text(json.dumps({**config, **config_changes}))
    payload = torch.load(run / "best.pt", weights_only=True)
    del payload["data_fingerprint"]
    payload["config"] = json.dumps(config)
    torch.save(payload, run / "best.pt")


def test_a_run_without_a_fingerprint_still_loads(shop_run, capsys):
    """Runs written before fingerprints (as the built-ins were until their retraining) are not checked."""
    run, data_dir = shop_run
    as_before_fingerprints(run)
    write_rows(data_dir / "shop", sorted(shop_rows(), key=lambda r: -r[0]))  # even on other data: not checked
    assert main(["evaluate", str(run)]) == 0
    assert "pop on shop" in capsys.readouterr().out


def test_the_committed_default_runs_load_and_record_their_datas_fingerprint():
    """The built-in runs are made by today's code (app/make_default_runs.py): each records the fingerprint of the
    planted world it trained on, and loads against it (runs written before fingerprints: the test above)."""
    from dimerec.trainer import load_run

    default = REPO_ROOT / "app" / "default_runs"
    runs = sorted(p for p in default.iterdir() if (p / "config.json").is_file())
    assert len(runs) == 5
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["dataset"] == "planted" and config["data_fingerprint"], run
        model, data, _ = load_run(run)
        assert model.n_items == data.n_items


def test_an_old_run_on_data_of_another_size_is_one_line_not_a_size_mismatch_traceback(cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    as_before_fingerprints(run, dataset="shop", data_dir=str(tmp_path / "data"))
    write_rows(tmp_path / "data" / "shop", shop_rows())
    rc = main(["evaluate", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "best.pt") in line and "does not fit" in line and "60 items" in line


def one_step_shop_run(tmp_path):
    """A ComiRec-SA run of one step on the `shop` rows in tmp_path/data: (its train argv, its run, its data dir)."""
    data_dir, run = tmp_path / "data", tmp_path / "run"
    write_rows(data_dir / "shop", shop_rows())
    train = ["train", "--model", "comirec-sa", "--dataset", "shop", "--data-dir", str(data_dir), "--dim", "8",
             "--quiet", "--out", str(run)]
    assert main([*train, "--max-steps", "1"]) == 0
    return train, run, data_dir


def test_resume_on_changed_data_is_refused_and_writes_nothing(tmp_path, capsys):
    train, run, data_dir = one_step_shop_run(tmp_path)
    write_rows(data_dir / "shop", [(u, 99 if i == 59 else i) for u, i in shop_rows()])  # an item renamed
    before = snapshot(run)
    capsys.readouterr()
    rc = main([*train, "--max-steps", "2", "--resume"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "last.pt") in line and "item ids map to other items" in line
    assert snapshot(run) == before


def test_resume_on_another_kind_of_device_is_refused_and_writes_nothing(tmp_path, capsys):
    """A run started on a GPU is not continued on the CPU: its config.json would then name one device for both."""
    train, run, _ = one_step_shop_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["train_config"]["device"] = "cuda"  # as a GPU's run records it
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    capsys.readouterr()
    rc = main([*train, "--max-steps", "2", "--resume"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run) in line and "trained on cuda, not cpu" in line and "--device cuda" in line
    assert snapshot(run) == before


def test_reproduce_passes_on_a_refused_resumes_remedy(tmp_path):
    """A run `reproduce` cannot continue says why and what to do, not merely to rerun (which would fail again)."""
    from dimerec.reproduce.runner import _train

    train, run, _ = one_step_shop_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["train_config"]["device"] = "cuda"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(DimeRecError) as refused:
        _train([*train, "--max-steps", "2", "--resume"], run)
    assert "trained on cuda, not cpu" in str(refused.value) and "--device cuda" in str(refused.value)
    assert "once that is mended" in str(refused.value)


@pytest.mark.parametrize("drop", ["train_config", "dataset", "model_config"])
def test_evaluate_a_config_json_missing_a_key_is_one_line(drop, cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    del config[drop]
    (run / "config.json").write_text(json.dumps(config))
    rc = main(["evaluate", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "config.json") in line and drop in line


def test_train_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me")
    rc = main(["train", "--model", "pop", "--dataset", "planted", "--out", str(tmp_path / "afile")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"--out {tmp_path / 'afile'} is a file" in line
    assert (tmp_path / "afile").read_text() == "keep me"


# ---- issue 31: a run directory is whole or absent -----------------------------------------------------------

class FailsAtStep(ComiRecSA):
    """ComiRec-SA whose loss raises at training step `at` (a bug of the model, not the user's mistake)."""
    name = "fails-at-step"
    at = 1

    def loss(self, batch):
        self.calls = getattr(self, "calls", 0) + 1
        if self.training and self.calls >= self.at:
            raise RuntimeError("the model broke")
        return super().loss(batch)


TINY_RUN = ["--dataset", "planted", "--dim", "8", "--quiet", "--valid-max-rows", "100"]


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_that_diverges_before_its_first_checkpoint_leaves_nothing(existed, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(MODELS, AlwaysNaN.name, AlwaysNaN)
    out = tmp_path / "run"
    if existed:  # a folder the user made: it stays, empty
        out.mkdir()
    rc = main(["train", "--model", "always-nan", *TINY_RUN, "--out", str(out)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and line.endswith(f"it failed before its first checkpoint, so nothing of it is kept in {out}")
    assert (list(out.iterdir()) == []) if existed else not out.exists()


def test_a_run_that_crashes_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, FailsAtStep.name, FailsAtStep)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the model broke") as info:
        main(["train", "--model", "fails-at-step", *TINY_RUN, "--out", str(out)])
    assert info.value.__notes__ == [f"it failed before its first checkpoint, so nothing of it is kept in {out}"]
    assert not out.exists()


def test_a_run_that_fails_after_a_checkpoint_keeps_it_and_says_how_to_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, FailsAtStep.name, FailsAtStep)
    monkeypatch.setattr(FailsAtStep, "at", 4)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError) as info:
        main(["train", "--model", "fails-at-step", *TINY_RUN, "--eval-every", "2", "--out", str(out)])
    assert info.value.__notes__ == [f"{out} keeps its last checkpoint: continue the run with --resume --out {out}"]
    assert {"config.json", "best.pt", "last.pt", "losses.csv", "valid.csv"} <= {p.name for p in out.iterdir()}
    assert json.loads(torch.load(out / "last.pt", weights_only=True)["state"])["step"] == 2


@pytest.mark.parametrize("make", ["absent", "empty"])
def test_resume_without_a_run_is_one_line_naming_the_folder(make, tmp_path, capsys):
    out = tmp_path / "run"
    if make == "empty":
        out.mkdir()
    rc = main(["train", "--model", "comirec-sa", *TINY_RUN, "--max-steps", "2", "--resume", "--out", str(out)])
    line = one_error_line(capsys.readouterr().err)
    says = "does not exist" if make == "absent" else "holds no run (no config.json)"
    assert rc == 2 and line == f"error: --resume: {out} {says}, so there is no run to continue; train without " \
                               f"--resume to start one there"
    assert (list(out.iterdir()) == []) if make == "empty" else not out.exists()


def test_resume_and_overwrite_together_are_refused_and_the_run_is_kept(cli_run, tmp_path, capsys):
    run = copy_run(cli_run[1], tmp_path / "run")
    before = snapshot(run)
    rc = main(["train", "--model", "comirec-sa", "--dataset", "planted", "--dim", "16", "--quiet", "--resume",
               "--overwrite", "--out", str(run)])
    assert rc == 2 and "pass one of the two" in one_error_line(capsys.readouterr().err)
    assert snapshot(run) == before
