"""`reproduce`: every experiment runs on a small `planted` world, resumes, shares runs, writes table and figure."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import dimerec.data.planted as planted
from dimerec.cli import main
from dimerec.reproduce import EXPERIMENTS, TUNING, Budget, Job, RunLock, RunSpec, grid, minutes_left, train_all, tune


@pytest.fixture(scope="module")
def small_world():
    full_size = planted.make_planted
    with pytest.MonkeyPatch.context() as patch:
        # speed; a run's own recorded world (planted_params, its 200 users) is rebuilt as recorded
        patch.setattr(planted, "make_planted", lambda seed=0, **world: full_size(**{"n_users": 200, **world},
                                                                                 seed=seed))
        yield


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, small_world):
    root = tmp_path_factory.mktemp("reproduce")
    return root / "runs", root / "results"


def from_run_files(runs: Path, name: str, seeds: int, key: str = "HR@50") -> dict[str, float]:
    """Each row of experiment `name`: its mean test `key` in % over the metrics.json of seeds 0..seeds-1 in its run
    folder (RUNS/planted/SLUG/seedN), which the table must say."""
    def test(slug: str, seed: int) -> float:
        return json.loads((runs / "planted" / slug / f"seed{seed}" / "metrics.json").read_text())["test"][key]

    return {spec.label: 100 * sum(test(spec.slug, seed) for seed in range(seeds)) / seeds for spec in EXPERIMENTS[name]}


# the epoch budget every reproduce run has by default (--max-epochs 50 --patience 5)
EPOCHS = "trained for at most 50 epochs, stopped after 5 validations without a better HR@50, within "


# rows too slow for --quick: the loo GRU4Rec in batches of 4,096 trains 4 budgets of 4,096-target steps (minutes)
QUICK_SKIPS = {"loo": ("--skip-runs", "sasrec-recbole-s-ml-1m-settings-batches-of-4-096,"
                                      "gru4rec-recbole-s-ml-1m-settings-batches-of-4-096,"
                                      "gru4rec-recbole-s-ml-1m-settings-batches-of-4-096-and-width")}


def run(name, dirs, *extra):
    runs, results = dirs
    argv = ["reproduce", name, "--dataset", "planted", "--runs", str(runs), "--results", str(results), *extra]
    assert main(argv) == 0
    return (results / f"{name}_planted.md").read_text(), pd.read_csv(results / f"{name}_planted.csv")


def test_dimerec_writes_a_table_and_a_figure_and_resumes(dirs):
    runs, results = dirs
    argv = ("--quick", "--seeds", "2")
    md, table = run("dimerec", dirs, *argv)
    assert "next-item protocol" in md and "Paired t-test over 2 seeds" in md and "★" in md
    assert EPOCHS + "2 minutes and 60 steps" in md
    assert "| epochs | plateaued |" in md  # ComiRec-SA, DimeRec and the control default to prefixes
    assert "Training samples (`--sampling`): prefixes (ComiRec-SA, DimeRec (ours)" in md
    assert list(table["model"]) == ["MostPopular", "ComiRec-SA", "DimeRec (paper)", "DimeRec (ours)",
                                    "DimeRec (ours, serve mean)", "no-diffusion control"]
    assert (table["seeds"] == 2).all()
    assert table.set_index("model")["HR@50"].to_dict() == pytest.approx(from_run_files(runs, "dimerec", 2))
    by_model = table.set_index("model")
    assert by_model.loc["MostPopular", "HR@50 std"] == 0  # popularity does not depend on the training seed
    assert (by_model.drop("MostPopular")["steps"] == 60).all()  # the step cap binds before the minute
    # the serve-mean row is DimeRec (ours)'s checkpoint served by x̂0 at t = T, not another training
    served = json.loads((runs / "planted" / "dimerec-ours-serve-mean" / "seed0" / "metrics.json").read_text())
    assert served["served_from"] == "../../dimerec-ours/seed0" and served["serve_overrides"] == {"serve": "mean"}
    assert not (runs / "planted" / "dimerec-ours-serve-mean" / "seed0" / "best.pt").exists()
    html = (results / "dimerec_planted.html").read_text()
    assert "plotly" in html and all(f'"{label}"' in html for label in table["model"])  # the figure draws every row
    if shutil.which("chromium") or shutil.which("google-chrome"):
        assert (results / "dimerec_planted.png").read_bytes()[:4] == b"\x89PNG"
    first = {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}
    assert len(first) == 12
    assert main(["reproduce", "dimerec", "--dataset", "planted", "--runs", str(runs), "--results", str(results),
                 *argv]) == 0  # a second call finds every run finished and only re-tabulates
    assert {p: p.stat().st_mtime for p in runs.rglob("metrics.json")} == first
    md, table = run("dimerec", dirs, *argv, "--skip-models", "pop")
    assert "MostPopular" not in set(table["model"]) and "Not run (`--skip-models`): MostPopular." in md
    # a skipped run takes the rows served from its checkpoints with it
    md, table = run("dimerec", dirs, *argv, "--skip-runs", "dimerec-ours")
    assert "Not run (`--skip-runs`): DimeRec (ours), DimeRec (ours, serve mean)." in md
    assert list(table["model"]) == ["MostPopular", "ComiRec-SA", "DimeRec (paper)", "no-diffusion control"]
    assert main(["reproduce", "dimerec", "--dataset", "planted", "--runs", str(runs), "--results", str(results),
                 *argv, "--skip-runs", "dimerec-our"]) == 2
    run("dimerec", dirs, *argv)  # the whole table again, for the claims test below (nothing retrained)


def test_a_finished_run_with_another_budget_is_not_reused(dirs, capsys):
    runs, results = dirs
    run("fig5", dirs, "--quick", "--seeds", "1")  # its runs under --quick's budget (already there in a full session)
    capsys.readouterr()
    code = main(["reproduce", "fig5", "--dataset", "planted", "--seeds", "1", "--max-minutes", "2",
                 "--max-steps", "41", "--runs", str(runs), "--results", str(results)])
    assert code == 2 and "and 60 steps, not " + EPOCHS + "2 minutes and 41 steps" in capsys.readouterr().err


def test_a_run_that_stopped_before_its_clock_is_reused_under_a_longer_clock_only(dirs, capsys):
    runs, results = dirs
    argv = ["reproduce", "fig5", "--dataset", "planted", "--seeds", "1", "--max-steps", "60", "--valid-max-rows",
            "300", "--runs", str(runs), "--results", str(results)]
    before = {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}
    assert main([*argv, "--max-minutes", "10"]) == 0  # --quick's runs stopped at 60 steps, well inside 2 minutes
    assert {p: p.stat().st_mtime for p in runs.rglob("metrics.json")} == before
    assert EPOCHS + "10 minutes and 60 steps" in (results / "fig5_planted.md").read_text()
    assert main([*argv, "--max-minutes", "1"]) == 2  # a shorter clock might have stopped them sooner
    capsys.readouterr()
    ran_out = runs / "planted" / "dimerec-ours" / "seed0" / "metrics.json"
    metrics = ran_out.read_text()
    try:  # had the run used up its 2 minutes, a longer clock would train it further: not the same run
        ran_out.write_text(json.dumps({**json.loads(metrics), "train_minutes": 2.0}))
        assert main([*argv, "--max-minutes", "10"]) == 2
        assert "a longer --max-minutes, if it stopped before its clock" in capsys.readouterr().err
    finally:
        ran_out.write_text(metrics)
    assert {p: p.stat().st_mtime for p in runs.rglob("metrics.json") if p != ran_out} == {
        p: t for p, t in before.items() if p != ran_out}


def test_a_misspelt_skipped_model_is_refused_before_any_training(dirs, capsys):
    runs, results = dirs
    before = sorted(runs.rglob("*"))
    code = main(["reproduce", "table1", "--dataset", "planted", "--quick", "--runs", str(runs),
                 "--results", str(results), "--skip-models", "diffurec,mult-vae"])
    err = capsys.readouterr().err
    assert code == 2 and "'mult-vae'" in err and "multvae" in err and "'diffurec'" not in err
    assert sorted(runs.rglob("*")) == before


def test_minutes_left_counts_only_runs_still_to_train(tmp_path):
    def job(name: str, model: str | None) -> Job:
        return Job(tmp_path / name, lambda: None, name, model=model)

    done = job("done", "slow")
    done.out.mkdir()
    (done.out / "metrics.json").write_text("{}")  # finished: costs nothing
    left = [done, job("a", "slow"), job("b", "fast"), job("served", None), job("c", "new")]
    # slow at its own mean (600 s), fast at its own (60 s), an unseen model at the mean of all (420 s)
    assert minutes_left(left, {"slow": [500.0, 700.0], "fast": [60.0]}) == pytest.approx((600 + 60 + 420) / 60)


def test_an_untrained_floors_instant_runs_do_not_shrink_the_estimate():
    from dimerec.reproduce.experiments import CONTROL, POP
    from dimerec.reproduce.runner import cost_model

    # MostPopular finishes in a second; counted as a model, its zeros would halve a new model's estimate
    assert cost_model(POP) is None
    assert cost_model(CONTROL) == CONTROL.label


def test_fig5_reads_the_dimerec_runs_step_metrics(dirs):
    md, curve = run("fig5", dirs, "--quick", "--seeds", "2")
    assert set(curve["model"]) == {"DimeRec (paper)", "DimeRec (ours)"}
    assert list(curve[curve.model == "DimeRec (ours)"]["t"]) == list(range(20, 0, -1))
    ours = curve[curve.model == "DimeRec (ours)"].set_index("t")["HR@50 mean"]
    steps = [json.loads((dirs[0] / "planted" / "dimerec-ours" / f"seed{seed}" / "step_metrics.json").read_text())
             for seed in (0, 1)]
    assert ours[20] == pytest.approx(100 * sum(s["steps"][0]["HR@50"] for s in steps) / 2)  # x̂0 from x_T, 2 seeds
    assert (curve["HR@50 std"] >= 0).all()
    assert "Final test metrics of the same runs" in md


def test_table4_and_fig4_share_runs_and_every_ablation_changes_the_model(dirs):
    runs, _ = dirs
    md, table = run("table4", dirs, "--quick")
    assert len(table) == 14 and "DimeRec (ours) w/o L_gem" in md and "Fig. 3: linear-probe accuracy" in md
    assert table.set_index("model")["HR@50"].to_dict() == pytest.approx(from_run_files(runs, "table4", 1))
    configs = {p.parent.parent.name: json.loads(p.read_text())["model_config"]
               for p in (runs / "planted").glob("dimerec-*/seed0/config.json")}
    assert configs["dimerec-ours-w-o-l-gem"]["gem_weight"] == 0
    assert configs["dimerec-ours-w-o-l-recon"]["lambda_recon"] == 0
    assert configs["dimerec-ours-w-o-l-ssm"]["mu_ssm"] == 0
    assert configs["dimerec-ours-w-o-grw"]["grw"] is False
    assert configs["dimerec-paper-w-o-grw"]["preset"] == "paper"
    before = {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}
    md, _ = run("fig4", dirs, "--quick")
    assert {p: p.stat().st_mtime for p in runs.rglob("metrics.json")} == before  # Table 4's runs, reused
    for term in ("L_gem", "L_recon", "L_ssm"):
        assert f"| with GRW | {term} |" in md and f"| without GRW | {term} |" in md


@pytest.mark.parametrize("name, labels", [
    ("table3", ["GEM = SASRec", "GEM = MLP", "GEM = ComiRec-DR", "GEM = ComiRec-SA", "no-diffusion control"]),
    ("table5", ["T = 5", "T = 10", "T = 20", "T = 50", "T = 100"]),
    ("table7", ["λ = 0.01", "λ = 0.1", "λ = 1", "λ = 10"]),
    ("table8", ["μ = 0.1", "μ = 1", "μ = 10", "μ = 100"]),
])
def test_analysis_tables_run_in_quick_mode(dirs, name, labels):
    md, table = run(name, dirs, "--quick")
    assert list(table["model"]) == labels
    assert table.set_index("model")["HR@50"].to_dict() == pytest.approx(from_run_files(dirs[0], name, 1))
    assert (table["steps"] == 60).all()


def test_table1_and_table2_quick(dirs):
    md, table = run("table1", dirs, "--quick")
    assert len(table) == 10 and table.loc[table.model == "MostPopular", "role"].item() == "floor"
    check = md[md.index("## Sanity check"):]
    assert check.count("\n| ") == 11 and "No baseline reports numbers on this dataset" in check  # header + 10 rows
    assert ("Diffusion steps T (`--T`), with each module's own note on it: DreamRec 200 (diffusion steps (official "
            "default 200; the paper searches 500-2000)); DiffuRec 32 (diffusion steps (official default 32)); "
            "DimeRec (ours) 20 (diffusion steps (Table 5: 20)).") in md
    assert "Settings: every model at its defaults, untuned (no `--tune`)." in md
    # beyond accuracy: MostPopular gives every user the same 50 items (seen items kept), all from the head
    # (the 96 most popular of planted's 480), so its coverage is 50/480 and its tail share 0; models differ
    beyond = md[md.index("## Beyond accuracy"):md.index("## Sanity check")]
    cells = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:]
             for line in beyond.splitlines() if line.startswith("| ") and "model" not in line}
    assert len(cells) == 10
    assert cells["MostPopular"][1] == f"{100 * 50 / 480:.2f}" and cells["MostPopular"][4] == "0.00"
    assert float(cells["MostPopular"][2]) > 0.85  # 50 of 480 items take every slot: Gini 1 - 50/480 = 0.896
    assert float(cells["SASRec"][1]) > float(cells["MostPopular"][1])
    assert table.loc[table.model == "MostPopular", "ItemCoverage@50"].item() == pytest.approx(100 * 50 / 480)
    md, probe = run("table2", dirs, "--quick")  # Table 1's runs: nothing retrained
    assert "## Beyond accuracy" in md
    assert "first listed category" in md and len(probe) == 10
    assert probe["categories in top 100"].between(1, 12).all()
    by_model = probe.set_index("model")
    # a trained item table carries the planted categories; popularity has no embedding to probe beyond counts
    assert by_model.loc["ComiRec-SA", "probe accuracy"] > by_model.loc["ComiRec-SA", "majority floor"] + 20


def test_tuning_picks_the_best_validation_setting_without_reading_test(dirs):
    runs, _ = dirs
    specs = [RunSpec("ComiRec-SA", "comirec-sa"), RunSpec("GRU4Rec", "gru4rec")]
    chosen, trials = tune(specs, "planted", data_dir=None, root=runs / "tuned", budget=Budget(1, 30),
                          extra_flags=["--valid-max-rows", "300"])
    assert len(trials) == len(grid("comirec-sa")) + len(grid("gru4rec")) == 6 + 8  # ce draws no negatives
    for label, group in trials.groupby("model"):
        best = group.loc[group["valid HR@50"].idxmax(), "setting"]
        assert chosen[label] == best.split() and group["chosen"].sum() == 1
    for metrics in (runs / "tuned").rglob("metrics.json"):
        assert json.loads(metrics.read_text())["test"] is None


def test_tuned_reproduction_scores_the_chosen_tuning_run_as_seed_0(dirs, monkeypatch, tmp_path):
    """Seed 0 of a tuned final run is the chosen tuning run itself (same seed, flags, budget), scored on test."""
    from dimerec.reproduce import experiments, reproduce
    from dimerec.reproduce.runner import flags_slug, served_source, tuning_run
    from dimerec.trainer import train_model

    # the catalogue's own dicts, which reproduce() and the tables read
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", [RunSpec("ComiRec-SA", "comirec-sa")])
    monkeypatch.setitem(experiments.DESCRIPTIONS, "tiny", "one model, tuned")
    runs = tmp_path / "runs"
    reproduce("tiny", "planted", 2, data_dir=None, max_minutes=1, max_steps=30, root=runs,
              out_dir=tmp_path / "results", tune_grid=True, extra_flags=["--valid-max-rows", "300"])
    chosen = pd.read_csv(tmp_path / "results" / "tiny_planted_tuning.csv").query("chosen").setting.item()
    md = (tmp_path / "results" / "tiny_planted.md").read_text()
    assert "Settings: each model's best trial of the grid on validation" in md
    final = runs / "tuned" / "planted" / "comirec-sa" / flags_slug(chosen.split())  # named by the choice
    seed0 = json.loads((final / "seed0" / "metrics.json").read_text())
    assert served_source(final / "seed0", seed0["served_from"]) == tuning_run(
        runs / "tuned", "planted", RunSpec("ComiRec-SA", "comirec-sa"), chosen.split())
    assert seed0["test"] is not None and seed0["steps"] == 30
    assert (final / "seed1" / "best.pt").exists()  # other seeds train
    flags = chosen.split()
    settings = {flag[2:].replace("-", "_"): value for flag, value in zip(flags[::2], flags[1::2])}
    _, _, direct = train_model("comirec-sa", "planted", seed=0, max_minutes=1, max_steps=30, valid_max_rows=300,
                               lr=float(settings["lr"]), loss_kind=settings["loss_kind"],
                               n_negatives=int(settings["n_negatives"]))  # trained as a final run would be
    assert direct["test"] == seed0["test"]


def test_the_bank_keeps_one_checkpoint_per_tuning_grid_and_a_fresh_machine_reuses_it(dirs, monkeypatch, tmp_path):
    """A trial `choose` passes over keeps only its record in the bank, from the moment a better one has finished
    (before its grid is complete: a session may end mid-grid); the chosen trial keeps its checkpoint, which a fresh
    machine's tuned reproduction scores on test as seed 0 without training anything again."""
    from dimerec.reproduce import experiments, reproduce, runner
    from dimerec.runs import Bank

    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", [RunSpec("ComiRec-SA", "comirec-sa")])
    monkeypatch.setitem(experiments.DESCRIPTIONS, "tiny", "one model, tuned")
    bank_folder = tmp_path / "bank"
    train = runner._train
    checkpoints_before_each_trial = []

    def counting(argv, out):
        checkpoints_before_each_trial.append(len(list((bank_folder / "tuned").rglob("tune/**/best.pt"))))
        train(argv, out)

    monkeypatch.setattr(runner, "_train", counting)
    common = dict(data_dir=None, max_minutes=1, max_steps=30, out_dir=tmp_path / "results", tune_grid=True,
                  extra_flags=["--valid-max-rows", "300"], bank=bank_folder)
    reproduce("tiny", "planted", 1, root=tmp_path / "runs", **common)
    n_trials = len(grid("comirec-sa"))
    assert checkpoints_before_each_trial == [0] + [1] * (n_trials - 1)  # pruned as it went, not at the end
    trials = pd.read_csv(tmp_path / "results" / "tiny_planted_tuning.csv")
    banked = [row for row in Bank(bank_folder, tmp_path / "runs").summary() if "/tune/" in row["run"]]
    states = {row["run"].split("/")[-1]: row["state"] for row in banked}
    status = (bank_folder / "STATUS.md").read_text()  # rewritten whenever a trial was banked or cut to its record
    assert all(f"| {row['run']} | {row['state']} |" in status for row in banked), status
    chosen = runner.flags_slug(trials.query("chosen").setting.item().split())
    assert states == {runner.flags_slug(setting.split()): "finished" if runner.flags_slug(setting.split()) == chosen
                      else "record only" for setting in trials.setting}
    first = pd.read_csv(tmp_path / "results" / "tiny_planted.csv")

    def no_training(argv, out):
        raise AssertionError(f"{out} was trained again")

    monkeypatch.setattr(runner, "_train", no_training)
    reproduce("tiny", "planted", 1, root=tmp_path / "fresh", **common)  # a new machine: only the bank
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "tiny_planted.csv"), first)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "tiny_planted_tuning.csv"), trials)


@pytest.mark.parametrize("running_above, on_final_rows", [(True, True), (False, True), (True, False)],
                         ids=["running-trial-above", "running-trial-below", "above-on-other-rows"])
def test_a_finished_trial_that_a_running_trial_has_validated_above_keeps_only_its_record(small_world, monkeypatch,
                                                                                        tmp_path, running_above,
                                                                                        on_final_rows):
    """A finished trial is cut to its record in the bank as soon as a trial still training (in a process beside
    this one) has validated above it, since that trial can only end higher and `choose` can never pick the finished
    one: its checkpoint need not enter the bank's history. A running trial validated below it leaves it whole, and
    so does one validated on rows other than its final validation's (its final figure may then be lower)."""
    from dimerec.reproduce import runner
    from dimerec.runs import Bank

    settings = grid("comirec-sa")[:2]
    monkeypatch.setattr(runner, "grid", lambda model: settings)
    spec, root = RunSpec("ComiRec-SA", "comirec-sa"), tmp_path / "runs"
    bank = Bank(tmp_path / "bank", root)
    first, second = (runner.tuning_run(root / "tuned", "planted", spec, flags) for flags in settings)
    train, banked_when_second_starts = runner._train, []

    def beside_another_process(argv, out):
        if out == second:
            banked_when_second_starts.extend(path.name for path in bank.of(first).iterdir())
        train(argv, out)
        if out == first:  # meanwhile another process has trained the second trial for an epoch under this budget
            second.mkdir(parents=True)
            config = json.loads((first / "config.json").read_text())
            config["train_config"]["valid_max_rows"] = 300 if on_final_rows else 200
            (second / "config.json").write_text(json.dumps(config))
            (second / "last.pt").write_bytes(b"")
            hr = json.loads((first / "metrics.json").read_text())["valid"]["HR@50"] + (0.01 if running_above else -0.01)
            (second / "valid.csv").write_text(f"epoch,step,train_minutes,HR@50\n1,10,0.1,{hr}\n")

    monkeypatch.setattr(runner, "_train", beside_another_process)
    budget = Budget(1, 30, final_rows=300, epochs=2, patience=5)  # an epoch budget: the second trial would resume
    tune([spec], "planted", data_dir=None, root=root / "tuned", budget=budget, extra_flags=["--valid-max-rows", "300"],
         bank=bank)
    assert "metrics.json" in banked_when_second_starts  # banked, its record whole
    assert ("best.pt" in banked_when_second_starts) is not (running_above and on_final_rows), banked_when_second_starts


def test_a_chosen_trial_whose_checkpoint_the_bank_left_out_is_trained_again_as_seed_0(small_world, monkeypatch,
                                                                                    tmp_path):
    """Above the bank's checkpoint limit no trial keeps its weights. A fresh machine holding the bank's records
    reuses a seed 0 already scored; one that has none (the session ended between tuning and the finals) trains
    seed 0 at the chosen setting, as a final run would, and gets the numbers the served trial got."""
    import functools

    import dimerec.reproduce as reproduce_module
    from dimerec.reproduce import experiments, reproduce, runner
    from dimerec.runs import Bank

    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", [RunSpec("ComiRec-SA", "comirec-sa")])
    monkeypatch.setitem(experiments.DESCRIPTIONS, "tiny", "one model, tuned")
    monkeypatch.setattr(reproduce_module, "Bank", functools.partial(Bank, checkpoint_limit_mb=1e-6))
    bank_folder = tmp_path / "bank"
    common = dict(data_dir=None, max_minutes=1, max_steps=30, out_dir=tmp_path / "results", tune_grid=True,
                  extra_flags=["--valid-max-rows", "300"], bank=bank_folder)
    reproduce("tiny", "planted", 1, root=tmp_path / "runs", **common)
    assert not list(bank_folder.rglob("*.pt"))
    first = pd.read_csv(tmp_path / "results" / "tiny_planted.csv")
    chosen = pd.read_csv(tmp_path / "results" / "tiny_planted_tuning.csv").query("chosen").setting.item().split()
    seed0 = tmp_path / "runs" / "tuned" / "planted" / "comirec-sa" / runner.flags_slug(chosen) / "seed0"
    served = json.loads((seed0 / "metrics.json").read_text())
    assert "served_from" in served
    trained = []
    train = runner._train
    monkeypatch.setattr(runner, "_train", lambda argv, out: (trained.append(out), train(argv, out)))
    reproduce("tiny", "planted", 1, root=tmp_path / "fresh", **common)
    assert trained == []  # the records are enough
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "tiny_planted.csv"), first)

    shutil.rmtree(Bank(bank_folder, tmp_path / "runs").of(seed0))
    reproduce("tiny", "planted", 1, root=tmp_path / "fresh2", **common)
    again = tmp_path / "fresh2" / seed0.relative_to(tmp_path / "runs")
    assert trained == [again]
    retrained = json.loads((again / "metrics.json").read_text())
    assert "served_from" not in retrained and retrained["test"] == served["test"]


def test_a_row_with_ours_flags_shares_ours_run_in_every_experiment():
    from dimerec.reproduce import OURS

    for name, specs in EXPERIMENTS.items():
        for spec in specs:
            if (spec.model == "dimerec" and spec.flags == OURS.flags and spec.serve_of is None
                    and (spec.budget_scale, spec.patience) == (OURS.budget_scale, OURS.patience)):
                assert spec.slug == OURS.slug, (name, spec.label)
    # H5 trains ours' flags on another budget: its own run, never ours'
    from dimerec.reproduce.experiments import LONG_OURS
    assert LONG_OURS.flags == OURS.flags and LONG_OURS.slug != OURS.slug


def test_a_run_folder_holds_one_run_definition_across_experiments():
    """Rows of different experiments share a run by its folder (slug), so one slug must mean one run: Table 5's
    "T = 5" (trained with T = 5) once shared ours-t-5 with DIFFUSION's "ours, t* = 5" (ours served from t* = 5),
    and whichever ran first would have been scored for both."""
    definitions: dict[str, set] = {}
    for specs in EXPERIMENTS.values():
        for spec in specs:
            definitions.setdefault(spec.slug, set()).add(
                (spec.model, tuple(spec.flags), spec.serve_of, tuple(sorted(spec.serve_overrides.items())),
                 spec.budget_scale, spec.patience))
    shared = {slug: defs for slug, defs in definitions.items() if len(defs) > 1}
    assert not shared, shared


def test_every_tuning_grid_is_small_and_names_real_flags():
    from dimerec.cli import build_parser

    for spec in EXPERIMENTS["table1"]:
        if spec.model == "pop":
            continue
        space = TUNING[spec.model]
        assert "--lr" in space and len(space) <= 3 and len(grid(spec.model)) <= 8
        parser = build_parser(spec.model)
        for settings in grid(spec.model):  # every flag parses for its model
            parser.parse_args(["train", "--model", spec.model, "--dataset", "planted", *settings])


def test_claims_judge_every_table_the_experiments_wrote(dirs):
    """Runs after the tests above have written every experiment's table for `planted`."""
    from dimerec.claims import CLAIMS, write_claims

    _, results = dirs
    for name in EXPERIMENTS:  # written by the tests above; made here when this test runs alone
        if not (results / f"{name}_planted.csv").exists():
            run(name, dirs, "--quick", *QUICK_SKIPS.get(name, ()))
    text = write_claims(results, ("planted",)).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| where")]
    assert len(rows) == len(CLAIMS)
    assert "not measured" not in text and "not run yet" not in text
    assert all(any(v in row for v in ("| holds |", "| partly |", "| does not hold |")) for row in rows)
    table4_row = next(row for row in rows if row.startswith("| Table 4 |"))
    assert "`python -m dimerec reproduce table4 --dataset planted" in table4_row and "--quick`" in table4_row


def test_the_exposure_claim_counts_each_measure_in_its_own_direction():
    from dimerec.claims import judge_exposure

    def table(ours: dict) -> pd.DataFrame:
        control = {"ItemCoverage@50": 20.0, "TailPercentage@50": 10.0, "Gini@50": 0.8, "AveragePopularity@50": 900.0,
                   "HR@50": 40.0}
        return pd.DataFrame([{"model": "DimeRec (ours)", **control, "HR@50": 30.0, **ours},
                             {"model": "no-diffusion control", **control}])

    # higher coverage and tail share, lower Gini and popularity: more diverse on all four
    text, mark = judge_exposure({"a": table({"ItemCoverage@50": 30.0, "TailPercentage@50": 20.0, "Gini@50": 0.7,
                                             "AveragePopularity@50": 800.0})})
    assert mark == "holds" and "more diverse on 4 of 4" in text and "test HR@50 30.00 vs 40.00" in text
    # a higher Gini and popularity are less diverse, as is an equal coverage
    text, mark = judge_exposure({"a": table({"TailPercentage@50": 20.0, "Gini@50": 0.9,
                                             "AveragePopularity@50": 950.0})})
    assert mark == "partly" and "more diverse on 1 of 4" in text
    assert judge_exposure({"a": table({"Gini@50": 0.9})})[1] == "does not hold"


def test_runs_locked_by_a_live_process_are_passed_over_then_waited_for_and_stale_locks_taken_over(tmp_path):
    import threading

    def finish(out: Path) -> None:
        out.mkdir()
        (out / "metrics.json").write_text("{}")

    busy, free, stale, served = (tmp_path / name for name in ("busy", "free", "stale", "served"))
    lock = RunLock(busy)
    assert lock.acquire() and not RunLock(busy).acquire()  # held by this (live) process: "another process"
    RunLock(stale).path.write_text("999999999")  # a pid that cannot be alive
    trained = []

    def train(out: Path):
        def run():
            trained.append(out.name)
            finish(out)
        return run

    def finish_elsewhere():  # the other process finishes its run, after this one has trained the free ones
        finish(busy)
        lock.release()

    timer = threading.Timer(0.5, finish_elsewhere)
    timer.start()
    # the served run needs the busy one: it waits for it, and must not hold up "free" and "stale" meanwhile
    train_all([Job(served, train(served), "served", after=busy), Job(busy, train(busy), "busy", model="m"),
               Job(free, train(free), "free", model="m"), Job(stale, train(stale), "stale", model="m")],
              desc="test", poll_seconds=0.05)
    timer.join()
    assert trained == ["free", "stale", "served"]  # "busy" was not trained twice
    assert not any(tmp_path.glob("*.lock"))


def test_a_models_seeds_start_once_its_own_grid_is_done_while_a_process_beside_trains_another_grid(
        small_world, monkeypatch, tmp_path):
    """Two tuned reproductions side by side: while the other process trains ComiRec-SA's last trial, this one does
    not wait for it at a grid/seeds boundary; it trains MostPopular's grid and seeds meanwhile, then ComiRec-SA's
    seeds once that trial has finished and the choice is known."""
    import threading

    from dimerec.reproduce import experiments, reproduce, runner
    from dimerec.reproduce.experiments import POP

    settings = grid("comirec-sa")[:2]
    monkeypatch.setattr(runner, "grid", lambda model: settings if model == "comirec-sa" else grid(model))
    spec = RunSpec("ComiRec-SA", "comirec-sa")
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", [spec, POP])  # ComiRec-SA's grid first
    monkeypatch.setitem(experiments.DESCRIPTIONS, "tiny", "two models, tuned")
    root = tmp_path / "runs"
    first, last = (runner.tuning_run(root / "tuned", "planted", spec, flags) for flags in settings)
    beside = RunLock(last)
    assert beside.acquire()  # held by a live process: the one beside this one, training the last trial
    finished_by, trained, train = [], [], runner._train

    def finish_beside(by: str) -> None:  # the process beside ends its trial (a copy of the first: a tie)
        if not finished_by:
            finished_by.append(by)
            shutil.copytree(first, last, dirs_exist_ok=True)
            beside.release()

    timer = threading.Timer(60, finish_beside, args=("the clock",))  # a queue that waits would wait for this
    timer.start()

    def this_process(argv, out):
        train(argv, out)
        trained.append(out.relative_to(root / "tuned" / "planted").as_posix())
        if out.parent.name == POP.slug and out.name == "seed1":  # MostPopular's seeds are done meanwhile
            finish_beside("this process's progress")

    monkeypatch.setattr(runner, "_train", this_process)
    try:
        reproduce("tiny", "planted", 2, data_dir=None, max_minutes=1, max_steps=30, root=root,
                  out_dir=tmp_path / "results", tune_grid=True, extra_flags=["--valid-max-rows", "300"])
    finally:
        timer.cancel()
    assert finished_by == ["this process's progress"], trained
    chosen = runner.flags_slug(settings[0])  # the tie goes to the earlier setting; its run is seed 0
    assert trained[-1] == f"comirec-sa/{chosen}/seed1" and f"{POP.slug}/seed1" in trained[:-1], trained
    assert last.relative_to(root / "tuned" / "planted").as_posix() not in trained  # not trained twice
    table = pd.read_csv(tmp_path / "results" / "tiny_planted.csv")
    assert list(table["model"]) == ["ComiRec-SA", "MostPopular"] and (table["seeds"] == 2).all()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    import os

    from dimerec.processes import start_time

    out = tmp_path / "seed0"
    lock = RunLock(out)
    lock.path.write_text(f"{os.getpid()} {start_time(os.getpid())}")  # this very process: alive
    assert not RunLock(out).acquire()
    lock.path.write_text(f"{os.getpid()} 1")  # this pid, but a process that started at another time
    assert RunLock(out).acquire() and lock.path.read_text().split()[0] == str(os.getpid())
    lock.path.write_text("")  # being written by its owner right now
    assert not RunLock(out).acquire()


def test_the_diffusion_experiment_tables_every_lever_and_states_its_verdict(dirs):
    from dimerec.reproduce import DIFFUSION_GROUPS
    from dimerec.reproduce.experiments import LONG_CONTROL, LONG_OURS

    md, table = run("diffusion", dirs, "--quick")
    for group, specs in DIFFUSION_GROUPS.items():
        assert f"## {group}" in md
        assert all(spec.label in set(table["model"]) for spec in specs)
    # H5's rows trained 3x the budget with their own patience: the table says so beside its budget line, and
    # names no other row (read from the runs' config.json)
    own = [line for line in md.splitlines() if line.startswith("Trained on a budget of their own: ")]
    assert len(own) == 1, own
    labels, own_budget = own[0].removeprefix("Trained on a budget of their own: ").split("; each run ")
    assert labels == f"{LONG_OURS.label}, {LONG_CONTROL.label}" or labels == f"{LONG_CONTROL.label}, {LONG_OURS.label}"
    assert own_budget.startswith("trained for at most ") and "stopped after 10 validations" in own_budget
    # every chain-served row has its chain's first and last step; the references and the mean have none
    chained = table.set_index("model")
    assert chained.loc["DimeRec (ours)", ["chain first", "chain last"]].notna().all()
    assert chained.loc[["no-diffusion control", "DimeRec (ours, serve mean)"], "chain first"].isna().all()
    # a serving-only lever is scored on its source's checkpoint: the mixture of one sample is the plain chain
    assert chained.loc["ours, S = 1, mixture", "HR@50"] == chained.loc["DimeRec (ours)", "HR@50"]
    verdict = md[md.index("## Verdict"):]
    assert "Best chain-served variant on validation" in verdict and "paired t-test" in verdict
    assert ("**cleared**" in verdict) != ("**not cleared**" in verdict)
    assert "## H6" in md and "| x_0 | x_0 |" in md
    # ms / user is wall clock: the table says how loaded the machine was while it was timed
    assert re.search(r"this machine: \d+ cores, a one-minute load average of \d+\.\d to \d+\.\d while it was "
                     r"timed", md)


def run_config(**train_config) -> str:
    """A run's config.json (a built-in run's, as older code wrote it) with these train_config settings."""
    config = json.loads((Path(__file__).parent / "fixtures" / "old_configs" / "dimerec-planted.json").read_text())
    config["train_config"].update(train_config)
    return json.dumps(config)


def test_a_longer_budget_scales_the_clock_and_the_steps_and_a_reused_run_must_have_had_it(tmp_path):
    """H5 of the diffusion experiment trains DimeRec and its control for 3x the budget: the scaled budget is the
    one its flags and its reuse check see."""
    from dimerec.errors import DimeRecError
    from dimerec.reproduce.experiments import LONG_CONTROL, LONG_OURS

    budget = Budget(10, 300, final_rows=500)
    assert budget.scaled(3) == Budget(30, 900, final_rows=500) and budget.scaled(1) is budget
    in_epochs = Budget(10, None, final_rows=500, epochs=20, patience=5)
    assert in_epochs.scaled(3) == Budget(30, None, final_rows=500, epochs=60, patience=5)
    assert in_epochs.flags()[:4] == ["--max-epochs", "20", "--patience", "5"]
    assert "--max-steps" in budget.scaled(3).flags() and "900" in budget.scaled(3).flags()
    assert LONG_OURS.budget_scale == LONG_CONTROL.budget_scale == 3
    # H5's patience 10 is the patience its runs train with: argparse keeps the last --patience of the argv, which
    # once was the budget's 5 (Budget.of puts the row's own into the budget)
    for spec in (LONG_OURS, LONG_CONTROL):
        argv = [*spec.flags, *in_epochs.of(spec).flags()]
        assert argv[len(argv) - 1 - argv[::-1].index("--patience") + 1] == "10"
        assert in_epochs.of(spec) == Budget(30, None, final_rows=500, epochs=60, patience=10)
    run = tmp_path / "seed0"
    run.mkdir()
    (run / "config.json").write_text(run_config(max_minutes=30, max_steps=900, final_max_rows=500))
    (run / "metrics.json").write_text(json.dumps({"train_minutes": 2.0}))
    budget.scaled(3).check(run)  # trained at 3x: reused at 3x
    with pytest.raises(DimeRecError, match="not trained for at most 10 minutes and 300 steps"):
        budget.check(run)


def beside_cells(md: str) -> dict[str, list[str]]:
    beside = md[md.index("## Beside RecBole's published ML-1M figures"):]
    beside = beside[:beside.find("\n## ")] if "\n## " in beside else beside  # up to the next section
    return {line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")[1:]
            for line in beside.splitlines() if line.startswith("| ") and not line.startswith("| model")}


def test_loo_trains_under_recboles_protocol_and_places_ours_beside_its_published_figures(dirs):
    runs, _ = dirs
    md, table = run("loo", dirs, "--quick", *QUICK_SKIPS["loo"])
    assert "Test split, loo protocol" in md
    skipped = [f"{model} (RecBole's ML-1M settings, batches of 4,096{width})"
               for model, width in (("GRU4Rec", ""), ("SASRec", ""), ("GRU4Rec", " and width"))]
    assert f"Not run (`--skip-runs`): {', '.join(skipped)}." in md
    assert not set(skipped) & set(table["model"])
    for slug in QUICK_SKIPS["loo"][1].split(","):
        assert not (runs / "planted" / slug).exists()  # never trained
    assert next(line for line in md.splitlines() if line.startswith("| MostPopular |")).endswith("| — | — |")
    configs = {p.parent.parent.name: json.loads(p.read_text()) for p in (runs / "planted").glob("*/seed0/config.json")}
    assert configs["sasrec-recbole-s-ml-1m-settings"]["train_config"]["protocol"] == "loo"
    assert configs["sasrec-recbole-s-ml-1m-settings"]["model_config"]["loss_kind"] == "ce"
    assert configs["gru4rec-recbole-s-ml-1m-settings"]["model_config"]["n_layers"] == 2
    assert configs["sasrec-recbole-s-ml-1m-settings"]["train_config"]["window_targets"] == 25  # half of 50
    assert configs["sasrec-recbole-s-ml-1m-settings-10-targets-a-window"]["train_config"]["window_targets"] == 10
    assert configs["mostpopular-loo"]["train_config"]["protocol"] == "loo"  # not Table 1's MostPopular run
    cells = beside_cells(md)
    assert set(cells) == set(table["model"])
    for model, hr10 in zip(table["model"], table["HR@10"]):  # ours: the runs' own test HR@10
        assert cells[model][0] == f"{hr10:.2f}" and cells[model][1] == "—"  # RecBole's: ML-1M only


def test_the_loo_section_fills_recboles_figures_on_ml1m():
    from dimerec.reproduce.experiments import LOO_ROWS
    from dimerec.reproduce.tables import RECBOLE_PUBLISHED, section_loo, summarize

    metrics = {"HR@10": 0.2, "HR@20": 0.3, "HR@50": 0.5, "NDCG@10": 0.1, "NDCG@20": 0.12, "NDCG@50": 0.15,
               "MRR@10": 0.0812}
    results = [{"label": spec.label, "role": spec.role, "seed": seed, "train_minutes": 1.0, "steps": 10,
                "run": "no-such-run", "test": {**metrics, "HR@10": metrics["HR@10"] + 0.01 * seed}}
               for spec in LOO_ROWS for seed in (0, 1)]
    table, note = summarize(results)
    lines, _, _ = section_loo("loo", "ml-1m", results, table, note)
    cells = beside_cells("\n".join(lines))
    sasrec = LOO_ROWS[1].label
    assert cells[sasrec][:2] == ["20.50", f"{RECBOLE_PUBLISHED[sasrec][1]['HR@10']:.2f}"]
    assert cells[sasrec][4:6] == ["8.12", f"{RECBOLE_PUBLISHED[sasrec][1]['MRR@10']:.2f}"]
    assert cells["MostPopular"][1] == "—"


def test_the_loo_section_measures_each_difference_as_a_pair_of_rows():
    """The blocks row against the official one: with minus without, over the seeds both have, from the runs."""
    from dimerec.reproduce.experiments import LOO_ROWS
    from dimerec.reproduce.tables import RECBOLE_MEASURED, section_loo, summarize

    difference, without, with_it = RECBOLE_MEASURED[0]
    assert {without, with_it} <= {spec.label for spec in LOO_ROWS}
    lift = {without: 0.0, with_it: 0.05}
    results = [{"label": spec.label, "role": spec.role, "seed": seed, "train_minutes": 1.0, "steps": 10,
                "run": "no-such-run",
                "test": {"HR@10": 0.15 + lift.get(spec.label, 0.0) + 0.01 * seed * (spec.label == with_it),
                         "HR@20": 0.3, "HR@50": 0.5, "NDCG@10": 0.07 + lift.get(spec.label, 0.0) / 2,
                         "NDCG@20": 0.1, "NDCG@50": 0.15, "MRR@10": 0.05}}
               for spec in LOO_ROWS for seed in ((0, 1, 2) if spec.label == with_it else (0, 1))]
    table, note = summarize(results)
    md = "\n".join(section_loo("loo", "ml-1m", results, table, note)[0])
    measured = md[md.index("## Differences from RecBole, measured"):]
    row = next(line.strip("| ").split(" | ") for line in measured.splitlines() if line.startswith(f"| {difference}"))
    # seeds 0 and 1 only: without 15.00, with 20.00 and 21.00
    from scipy import stats
    p = stats.ttest_rel([0.20, 0.21], [0.15, 0.15]).pvalue
    assert row[1:] == ["2", "15.00", "20.50", "+5.50", "+2.50", f"{p:.3g}"]


def test_the_loo_section_bounds_the_selection_metric_from_the_validation_curves(tmp_path):
    """RecBole selects on NDCG@10, ours on HR@50: valid.csv records HR@10, so choosing the epoch by it is bounded by
    the best epoch's HR@10 minus the HR@50-chosen epoch's (the first of equal HR@50s, as training keeps it)."""
    from dimerec.reproduce.tables import RECBOLE_SELECTION, unmatched_lines

    def result(label: str, seed: int, curve: list[tuple[float, float]]) -> dict:
        run = tmp_path / f"{label}{seed}"
        run.mkdir()
        (run / "valid.csv").write_text("epoch,step,HR@50,HR@10\n" + "".join(
            f"{i},{100 * i},{hr50},{hr10}\n" for i, (hr50, hr10) in enumerate(curve, 1)))
        return {"label": label, "seed": seed, "run": str(run)}

    results = [result("A", 0, [(0.40, 0.10), (0.50, 0.20), (0.50, 0.25), (0.45, 0.23)]),  # chosen: epoch 2
               result("A", 1, [(0.50, 0.22), (0.40, 0.21)]),  # chosen is the best: 0
               result("B", 0, [(0.30, 0.12), (0.31, 0.11)])]
    text = "\n".join(unmatched_lines(results))
    assert "by at most 1.00 to 2.50 points" in text and "(A 2.50; B 1.00)" in text
    assert text.index("Not matched, bounded:") < text.index(RECBOLE_SELECTION)
    # runs that recorded no validation HR@10 leave the selection among the unmeasured differences
    (tmp_path / "B0" / "valid.csv").write_text("epoch,step,HR@50\n1,100,0.3\n")
    assert "bounded" not in "\n".join(unmatched_lines(results[2:])) and RECBOLE_SELECTION in text


def test_a_run_a_stopped_reproduce_left_unfinished_resumes_under_the_same_budget(tmp_path):
    """Regeneration spans sessions: a run with a last.pt and no metrics.json is continued (--resume) when it trained
    under the same epochs and patience, and started afresh (--overwrite) when finished, never begun, or budgeted
    otherwise."""
    from dimerec.reproduce.runner import train_flags

    budget = Budget(60, None, epochs=50, patience=5)
    run = tmp_path / "seed0"

    def mode() -> str:
        flags = train_flags("planted", 0, run, budget, None, [])
        return next(f for f in flags if f in ("--resume", "--overwrite"))

    assert mode() == "--overwrite"  # nothing there
    run.mkdir()
    (run / "last.pt").write_bytes(b"checkpoint")
    (run / "config.json").write_text(run_config(max_epochs=50, patience=5))
    assert mode() == "--resume"
    (run / "config.json").write_text(run_config(max_epochs=50, patience=10))
    assert mode() == "--overwrite"  # another budget: trained again
    (run / "config.json").write_text(run_config(max_epochs=50, patience=5))
    (run / "metrics.json").write_text("{}")
    assert mode() == "--overwrite"  # finished: reproduce reuses it and never trains it (this is not asked)


def test_checkpoint_every_reaches_every_run_reproduce_trains(small_world, tmp_path):
    """`reproduce --checkpoint-every N` hands N to each run's trainer (which writes last.pt every N steps, so a run
    stopped mid-epoch resumes there: test_trainer's resume tests), and a finished run trains the same numbers."""
    def trained(runs: Path, *flags: str) -> dict[str, tuple]:
        assert main(["reproduce", "fig5", "--dataset", "planted", "--quick", "--runs", str(runs),
                     "--results", str(tmp_path / "results"), *flags]) == 0
        return {m.parent.parent.name: (json.loads((m.parent / "config.json").read_text())["train_config"]
                                       ["checkpoint_every"], json.loads(m.read_text())["valid"]["HR@50"])
                for m in runs.rglob("metrics.json")}

    every, plain = trained(tmp_path / "every", "--checkpoint-every", "7"), trained(tmp_path / "plain")
    assert len(every) == 2 and {slug: n for slug, (n, _) in every.items()} == dict.fromkeys(every, 7)
    assert {slug: n for slug, (n, _) in plain.items()} == dict.fromkeys(every, None)
    assert {slug: hr for slug, (_, hr) in every.items()} == {slug: hr for slug, (_, hr) in plain.items()}


def test_docs_reproducing_lists_the_command_of_every_committed_table():
    """docs/reproducing.md is copied from the tables' Command lines: a regenerated table whose command changed
    (a new budget, say) fails here until the page says so."""

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "reproducing.md").read_text()
    commands = {md.name: re.search(r"Command: `(python -m dimerec reproduce [^`]+)`", md.read_text())
                for md in (root / "results").glob("*_*.md")}
    stale = {name: found.group(1) for name, found in commands.items() if found and found.group(1) not in doc}
    assert len([c for c in commands.values() if c]) >= 15 and not stale, stale  # 18 tables today


def test_readme_names_exactly_the_tables_regenerated_at_convergence():
    """README's "Regenerated so far" list is checked against the tables' own budget lines (a run stopped by
    validation patience is at convergence): a regenerated table missing from it, or a one-epoch table named in
    it, fails here."""
    from dimerec.reproduce.runner import PATIENCE_STOP

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    listed = set(re.findall(r"`(\w+_[\w-]+)`", readme[readme.index("Regenerated so far"):].split("\n\n")[0]))
    converged = {md.stem for md in (root / "results").glob("*_*.md")
                 if PATIENCE_STOP in md.read_text().splitlines()[2]}
    assert len(converged) >= 6 and listed == converged, (sorted(converged - listed), sorted(listed - converged))


def test_runs_begun_earlier_are_finished_before_new_ones_start(tmp_path):
    """A regeneration spanning sessions resumes the runs it began (a last.pt) before it begins others, whatever
    their place in the experiment's order."""
    trained = []

    def job(name: str, begun: bool) -> Job:
        out = tmp_path / name
        out.mkdir()
        if begun:
            (out / "last.pt").write_bytes(b"checkpoint")

        def train():
            trained.append(name)
            (out / "metrics.json").write_text("{}")
        return Job(out, train, name, model="m")

    train_all([job("new-a", False), job("begun-b", True), job("new-c", False), job("begun-d", True)], desc="test")
    assert trained == ["begun-b", "begun-d", "new-a", "new-c"]


def test_a_hypothesis_whose_every_row_was_skipped_says_so_instead_of_an_empty_table():
    from dimerec.reproduce import DIFFUSION_GROUPS
    from dimerec.reproduce.tables import diffusion_group_lines

    ran = [spec.label for spec in DIFFUSION_GROUPS["References"]]
    table = pd.DataFrame({"model": ran, "HR@50": 40.0, "HR@50 std": 1.0, "NDCG@50": 10.0, "NDCG@50 std": 0.5})
    lines = diffusion_group_lines(table, {label: 41.0 for label in ran}, pd.DataFrame(columns=["first", "last"]),
                                  {}, (1.5, 2.5))
    md = "\n".join(lines)
    h4 = next(group for group in DIFFUSION_GROUPS if group.startswith("H4"))
    section = md[md.index(f"## {h4}"):].split("\n## ")[0]
    assert "Not run in this reproduction" in section and "|" not in section
    references = md[md.index("## References"):].split("\n## ")[0]
    assert all(f"| {label} | 41.00 | 40.00 ± 1.00 |" in references for label in ran)
    assert "Not run" not in references
    assert "a one-minute load average of 1.5 to 2.5 while it was timed" in lines[0]


def test_the_training_note_counts_runs_and_epochs_in_plain_english():
    from dimerec.reproduce.tables import training_note

    one = {"model": "sasrec", "train_minutes": 117.2, "epochs_trained": 42.0}
    assert training_note([one, {"model": "pop", "train_minutes": 0.0}])[1].startswith(
        "Training: 1 run, 117 minutes of training in all") and "; 42 epochs." in training_note([one])[1]
    two = training_note([one, {**one, "epochs_trained": 12.0}])[1]
    assert two.startswith("Training: 2 runs, 234 minutes") and "; 12 to 42 epochs a run." in two


def test_a_run_that_fell_after_its_best_is_not_counted_as_plateaued(tmp_path):
    """The loo GRU4Rec at lr 0.005 peaked at validation HR@50 49.6 and fell to 7.4 (its loss jumped 5.6 → 9): patience
    stopped it, but its row must not read as a plateau."""
    from dimerec.reproduce.tables import training_length

    def result(name: str, curve: list[float], stopped_by: str = "patience") -> dict:
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text("{}")
        (run / "valid.csv").write_text("epoch,step,HR@50\n" + "".join(f"{i},{100 * i},{v}\n"
                                                                    for i, v in enumerate(curve, 1)))
        return {"run": str(run), "stopped_by": stopped_by, "epochs_trained": float(len(curve))}

    level = result("level", [0.40, 0.50, 0.49, 0.48])  # within a tenth of its best: a plateau
    fallen = result("fallen", [0.40, 0.50, 0.07, 0.08])
    capped = result("capped", [0.40, 0.45], stopped_by="max_epochs")
    assert training_length([level, capped])["plateaued"] == "1/2"
    assert training_length([level, fallen, capped]) == {"epochs": 10 / 3, "plateaued": "1/3, 1 fell", "cut short": 0}
    # a served row reads its source's curve, beside a trained row that has no served_from
    served = {**result("served", []), "served_from": "../fallen"}
    assert training_length([level, served])["plateaued"] == "1/2, 1 fell"
    # runs written before stopped_by was recorded: no plateau column, the epochs that are known
    assert training_length([level, {"run": level["run"]}]) == {"epochs": 4.0, "plateaued": None, "cut short": None}


def test_rows_cut_short_by_their_clock_are_named_lower_bounds(tmp_path):
    """DiffuRec's ML-1M trials stop on the 240-minute clock at 4 to 5 epochs, still rising: its Table 1 row reads
    "0/5" plateaued, and the table and RESULTS.md must say its figures are lower bounds, not a converged score."""
    import pandas as pd

    from dimerec.claims import judge_table1_best
    from dimerec.reproduce.tables import cut_short_note, training_length

    def result(name: str, stopped_by: str) -> dict:
        run = tmp_path / name
        run.mkdir()
        (run / "valid.csv").write_text("epoch,step,HR@50\n1,100,0.30\n2,200,0.36\n")
        return {"run": str(run), "stopped_by": stopped_by, "epochs_trained": 2.0}

    clock, steps, patience = (result(n, n) for n in ("max_minutes", "max_steps", "patience"))
    assert training_length([clock, steps, patience])["cut short"] == 2
    assert training_length([patience, result("epochs", "max_epochs")])["cut short"] == 0  # its epochs all trained

    table = pd.DataFrame({"model": ["SASRec", "DiffuRec", "DimeRec (ours)"], "seeds": [5, 5, 5],
                          "cut short": [0, 5, None], "role": ["baseline", "baseline", "ours"],
                          **{k: [30.0, 20.0, 25.0] for k in ("HR@20", "HR@50", "NDCG@20", "NDCG@50")}})
    note = cut_short_note(table)[1]
    assert "DiffuRec (5 of 5 runs)" in note and "SASRec" not in note and "lower bounds" in note
    measured, _ = judge_table1_best({"ml-1m": table})
    assert measured.endswith("(lower bounds, cut short by their clock or step cap: DiffuRec)")
    uncut = table.assign(**{"cut short": [0, 0, 0]})
    assert cut_short_note(uncut) == [] and "lower bounds" not in judge_table1_best({"ml-1m": uncut})[0]
    assert cut_short_note(table.drop(columns="cut short")) == []  # a table written before the column existed
