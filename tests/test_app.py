"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest on the built-in runs (app/default_runs/).

Every page runs without an exception and draws its figures; the URL's run, user and step are honoured;
bad input (an unknown run or user, a broken run directory) shows an error message, not a traceback.
"""
import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN = str(REPO_ROOT / "app" / "main.py")
DEFAULT = REPO_ROOT / "app" / "default_runs"
RUN, NOGRW, NODIFF = "default/dimerec-planted", "default/dimerec-nogrw-planted", "default/dimerec-nodiff-planted"


@pytest.fixture(autouse=True)
def only_builtin_runs(monkeypatch, tmp_path):
    """The app sees the built-in runs and an empty runs/ folder, whatever the checkout holds."""
    monkeypatch.setenv("DIMEREC_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def open_page(page: str, **params) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    if page != "tour":
        at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array) -> np.ndarray:
    """A figure's data array: plotly writes numpy arrays as base64 ({"bdata", "dtype"})."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def trace_names(figure: dict) -> list[str]:
    return [t.get("name") for t in figure["data"]]


def param(at: AppTest, key: str) -> str | None:
    """A URL parameter as the page left it."""
    value = at.query_params.get(key)
    return value[-1] if isinstance(value, list) else value


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def test_the_built_in_runs_are_small_and_match_the_model_code():
    """When this fails after a change to a model, regenerate them: `python app/make_default_runs.py`."""
    import torch

    from dimerec.models import MODELS
    from dimerec.models.base import check_contract
    from dimerec.runs import read_config
    from dimerec.trainer import load_checkpoint

    files = [f for f in DEFAULT.rglob("*") if f.is_file()]
    # a few MB: DreamRec needs d = 128 to rank above popularity on planted (app/make_default_runs.py)
    assert sum(f.stat().st_size for f in files) < 6e6
    assert {f.name for f in files} <= {"config.json", "best.pt", "losses.csv", "valid.csv", "metrics.json",
                                       "step_metrics.json", "presets.json", "item_map.npz", "sample_or_mean.json"}
    for run in ("dimerec-planted", "dimerec-nogrw-planted", "dimerec-nodiff-planted"):
        config = read_config(DEFAULT / run)  # the one reader: these config.json files are older than the code
        model_cls = MODELS[config["model"]]
        model = model_cls(config["n_items"], config["max_len"], model_cls.Config(**config["model_config"]))
        try:
            model.load_state_dict(load_checkpoint(DEFAULT / run / "best.pt")["model"])
        except RuntimeError as err:
            pytest.fail(f"app/default_runs/{run} no longer fits the {config['model']} code; regenerate the built-in "
                        f"runs with `python app/make_default_runs.py` ({str(err).splitlines()[1].strip()})")
        hist = torch.full((2, config["max_len"]), config["n_items"])
        hist[:, -3:] = torch.tensor([[1, 2, 3], [4, 5, 6]])
        check_contract(model, hist)  # every method the model declares runs, at the shapes the app reads


def test_tour_runs_every_chapter():
    at = open_page("tour")
    assert not at.error
    chapters = at.radio(key="tour_chapter").options
    assert len(chapters) == 5
    for chapter in chapters:
        at.radio(key="tour_chapter").set_value(chapter).run()
        assert not at.exception and not at.error, chapter
        assert figures(at) or at.dataframe or at.get("component_instance"), chapter
    at.radio(key="tour_chapter").set_value(chapters[3]).run()  # chapter 4 plays the reverse run, with its steps
    assert player(at)["key"].startswith("tour_player:") and len(player(at)["data"]["frames"]) == 21
    at.radio(key="tour_chapter").set_value(chapters[2]).run()
    names = trace_names(figures(at)[0])
    assert "noise paths x_0 → x_t" in names and "x_0: the true next item" in names
    at.button(key="tour_next").click().run()
    assert at.radio(key="tour_chapter").value == chapters[3]


def player(at: AppTest) -> dict:
    """The Denoising player's arguments: what the browser receives once per run, user and sample set."""
    (component,) = at.get("component_instance")
    return json.loads(component.proto.json_args)


def report_step(at: AppTest, step: int) -> AppTest:
    """What the browser does when Play pauses or the slider is released: the player reports its step."""
    args = player(at)
    at.session_state[args["key"]] = {"step": step, "data_id": args["data"]["data_id"]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_denoising_sends_the_whole_reverse_run_as_frames_that_agree_with_each_other():
    at = open_page("denoising")
    assert not at.error
    data = player(at)["data"]
    T = data["T"]
    assert T == json.loads((DEFAULT / "dimerec-planted" / "config.json").read_text())["model_config"]["T"]
    names = trace_names(data["sphere"])
    for name in ("history items", "GEM interests (K=4)", "true next item", "paths x_T → x_t", "x_t now (t = 20)"):
        assert name in names
    assert "GEM interests I1…I4" in data["key"] and "paths x_T → x_t" in data["key"]
    categories = json.loads((DEFAULT / "dimerec-planted" / "config.json").read_text())["dataset_stats"]["categories"]
    assert sum(t.get("legendgroup") == "items" for t in data["sphere"]["data"]) == categories
    assert [f["name"] for f in data["frames"]] == [str(k) for k in range(T + 1)]
    now = [next(t for t in f["data"] if t["name"].startswith("x_t now")) for f in data["frames"]]
    assert [t["name"] for t in now] == [f"x_t now (t = {T - k})" for k in range(T + 1)]
    assert len(now[0]["x"]) == at.slider(key="denoise_samples").value == 6
    assert not np.allclose(now[3]["x"], now[17]["x"])  # the samples move between frames
    assert data["step"] == T and param(at, "step") == str(T)
    ranks = values(data["ranks"]["data"][0]["y"])
    for k, text in enumerate(data["steps"]):  # heading, table and rank chart say the same thing at every step
        assert text["heading"].startswith(f"After {k} of {T} reverse steps — x_t at t = {T - k}")
        assert len(text["items"]) == 10 and [row["rank"] for row in text["items"]] == list(range(1, 11))
        marked = [row["rank"] for row in text["items"] if row["next"]]
        if np.isnan(ranks[k]):
            assert "not in the top 50" in text["rank_line"] and not marked
        else:
            assert f"is <b>#{int(ranks[k])}</b> of the top 50" in text["rank_line"]
            assert marked == ([int(ranks[k])] if ranks[k] <= 10 else [])


def test_the_angle_lines_have_their_samples_colours_and_distinct_legend_entries():
    """Issue 30: six identical black lines with identical legend entries told the class nothing."""
    data = player(open_page("denoising"))["data"]
    lines = data["angles"]["data"]
    final = next(t for t in data["frames"][-1]["data"] if t["name"].startswith("x_t now"))
    assert [t["line"]["color"] for t in lines] == final["marker"]["color"]  # as the samples' diamonds at step T
    assert len({t["name"] for t in lines}) == len(lines) == 6
    assert len({(t["line"]["color"], t["line"]["dash"]) for t in lines}) == len(lines)  # no two lines alike


def test_the_step_the_player_reports_reaches_the_url_and_survives_run_and_user_switches():
    at = open_page("denoising")
    report_step(at, 7)
    assert param(at, "step") == "7"
    user = at.selectbox(key="user_select").value
    at.selectbox(key="run_select").set_value(NODIFF).run()  # a run without a chain: no player
    assert not at.get("component_instance")
    at.selectbox(key="run_select").set_value(RUN).run()
    assert player(at)["data"]["step"] == 7 and param(at, "step") == "7"  # a fresh player starts where it left
    other = next(int(u.split()[-1]) for u in at.selectbox(key="user_select").options if not u.endswith(f" {user}"))
    at.selectbox(key="user_select").set_value(other).run()
    args = player(at)
    assert args["key"].endswith(f":{other}") and args["data"]["step"] == 7 and param(at, "step") == "7"
    report_step(at, 12)
    assert param(at, "step") == "12" and player(at)["data"]["step"] == 12


def test_a_run_with_another_chain_length_opens_at_the_same_share_of_its_chain():
    """Issue 30: step 10 of DimeRec's 20 opens DreamRec's 200-step chain at step 100, not at step 10 of 200."""
    at = open_page("denoising")
    assert player(at)["data"]["T"] == 20
    report_step(at, 10)
    at.selectbox(key="run_select").set_value("default/dreamrec-planted").run()
    data = player(at)["data"]
    assert data["T"] == 200 and data["step"] == 100 and param(at, "step") == "100"
    at.selectbox(key="run_select").set_value(RUN).run()  # and back: half of 20
    assert player(at)["data"]["step"] == 10 and param(at, "step") == "10"


def test_url_parameters_choose_the_run_the_user_and_the_step():
    at = open_page("tour")
    users = at.selectbox(key="user_select").options
    second = int(users[1].split()[-1])
    at = open_page("denoising", run=NOGRW, user=second, step=7)
    assert not at.error
    assert at.selectbox(key="run_select").value == NOGRW
    assert at.selectbox(key="user_select").value == second
    assert player(at)["data"]["step"] == 7
    assert param(at, "user") == str(second) and param(at, "run") == NOGRW


def test_the_projector_switch_lives_in_the_url_and_enlarges_every_figure_text():
    at = open_page("denoising", projector=1)
    assert at.toggle(key="projector").value and param(at, "projector") == "1"
    big = player(at)["data"]
    assert big["projector"] and big["sphere"]["layout"]["font"]["size"] >= 16
    for chart in ("ranks", "angles"):
        layout = big[chart]["layout"]
        assert layout["font"]["size"] >= 16 and layout["xaxis"]["tickfont"]["size"] >= 16
    at.toggle(key="projector").set_value(False).run()
    assert param(at, "projector") is None and player(at)["data"]["ranks"]["layout"]["font"]["size"] < 16
    at = open_page("training", projector=1)
    assert all(f["layout"]["font"]["size"] >= 16 for f in figures(at))


@pytest.mark.parametrize("params, message", [
    ({"user": "999999"}, "not a held-out user"),
    ({"user": "abc"}, "not a held-out user"),
    ({"run": "runs/nowhere"}, "was not found"),
    ({"step": "99"}, "not a reverse step"),
])
def test_bad_links_show_an_error_and_the_page_still_works(params, message):
    at = open_page("denoising", **params)
    assert message in errors(at)
    assert player(at)["data"]["step"] == 20, "the page falls back to a valid view"


def _run_dir(tmp_path, name: str, source: str = "dimerec-planted") -> Path:
    target = tmp_path / "runs" / name
    shutil.copytree(DEFAULT / source, target)
    return target


@pytest.mark.parametrize("breakage, message", [
    ("corrupt-config", "is not valid JSON"),
    ("no-checkpoint", "best.pt is missing"),
    ("corrupt-checkpoint", "is not a readable checkpoint"),
    ("other-models-weights", "does not fit the dimerec model"),
    ("unknown-model", "known model"),
])
def test_a_broken_run_directory_shows_a_clear_error(tmp_path, breakage, message):
    run = _run_dir(tmp_path, breakage)
    if breakage == "corrupt-config":
        (run / "config.json").write_text("{ not json")
    elif breakage == "no-checkpoint":
        (run / "best.pt").unlink()
    elif breakage == "corrupt-checkpoint":
        (run / "best.pt").write_bytes(b"\x00 not a checkpoint")
    elif breakage == "other-models-weights":
        shutil.copy(DEFAULT / "dimerec-nodiff-planted" / "best.pt", run / "best.pt")
    else:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "model": "no-such-model"}))
    for page in ("denoising", "interests", "what_if"):
        at = open_page(page, run=f"runs/{breakage}")
        assert message in errors(at), (page, errors(at))
        assert "This run cannot be shown" in errors(at)


def test_a_broken_losses_file_is_reported_on_the_training_page(tmp_path):
    run = _run_dir(tmp_path, "bad-losses")
    (run / "losses.csv").write_text("these are not\nthe losses\n")
    at = open_page("training", run="runs/bad-losses")
    assert "losses.csv has no 'step' column" in errors(at)


def test_runs_under_runs_folder_are_listed(tmp_path):
    _run_dir(tmp_path, "mine/dimerec-copy")
    at = open_page("interests", run="runs/mine/dimerec-copy")
    assert not at.error
    assert at.selectbox(key="run_select").value == "runs/mine/dimerec-copy"
    assert at.selectbox(key="run_select").options[0] == "dimerec-planted (built-in)"
    assert "runs/mine/dimerec-copy" in at.selectbox(key="run_select").options


def test_runs_up_to_six_folders_down_are_listed(tmp_path):
    """Issue 29, defect 2: a reproduction's runs sit four (runs/reproduce/DATASET/NAME/seedN) or five (tuned:
    .../NAME/FLAGS/seedN) folders down; the app lists every run up to six folders below runs/, and nothing deeper."""
    from app import runs

    for name in ("a", "reproduce/planted/dimerec-ours/seed0", "mine/reproduce/planted/dimerec-ours/lr-0.001/seed0",
                 "one/two/three/four/five/six/seven"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
    listed = [run_id for run_id in runs.discover_runs() if run_id.startswith("runs/")]
    assert listed == ["runs/a", "runs/mine/reproduce/planted/dimerec-ours/lr-0.001/seed0",
                      "runs/reproduce/planted/dimerec-ours/seed0"]


def test_a_run_on_its_datasets_own_split_opens(tmp_path):
    """Issue 29, defect 3: a `--split given` run (a DreamRec folder's own train/validation/test parts) opens in the
    app: its dataset is read with the run's split, so the fingerprint check passes and the parts are the run's."""
    import pandas as pd

    from dimerec.cli import main

    folder, pad, rng = tmp_path / "data" / "shop", 60, np.random.default_rng(0)
    folder.mkdir(parents=True)
    pd.DataFrame({"seq_size": [10], "item_num": [pad]}).to_pickle(folder / "data_statis.df")
    for part, n in (("train_data.df", 30), ("val_data.df", 6), ("test_data.df", 6)):
        rows = []
        for _ in range(n):  # DreamRec's rows: every prefix of a sequence, the history right-padded
            seq = rng.integers(0, pad, size=int(rng.integers(3, 8))).tolist()
            rows += [(seq[:k] + [pad] * (10 - k), max(1, k), seq[k]) for k in range(len(seq))]
        pd.DataFrame(rows, columns=["seq", "len_seq", "next"]).to_pickle(folder / part)
    assert main(["train", "--model", "comirec-sa", "--dataset", "shop", "--data-dir", str(tmp_path / "data"),
                 "--split", "given", "--max-steps", "2", "--out", str(tmp_path / "runs" / "given")]) == 0
    at = open_page("interests", run="runs/given")
    assert not at.error, errors(at)
    assert at.selectbox(key="run_select").value == "runs/given"
    from app import runs

    split = runs.load_run("runs/given").split
    assert (len(split.train), len(split.valid), len(split.test)) == (30, 6, 6)


def test_interests_show_attention_category_mix_and_the_planted_truth():
    at = open_page("interests")
    assert not at.error
    attention, mix = figures(at)[:2]
    assert attention["data"][0]["type"] == "heatmap"
    assert len(attention["data"][0]["x"]) == 4  # K interests
    assert all(t["type"] == "bar" for t in mix["data"])
    assert any("planted interests" in m.value for m in at.markdown)
    truth = at.dataframe[0].value
    assert list(truth.columns) == ["category", "weight"] and abs(truth["weight"].sum() - 1) < 1e-6


def test_a_model_without_diffusion_explains_what_is_missing():
    at = open_page("denoising", run=NODIFF)
    assert not at.error
    assert any("has no diffusion" in i.value for i in at.info)
    assert "paths x_T → x_t" not in trace_names(figures(at)[0])


def test_training_compares_the_losses_with_and_without_grw():
    at = open_page("training")
    assert not at.error
    assert at.multiselect(key=f"training_runs_{RUN}").value == [RUN, NOGRW]
    losses = figures(at)[0]
    assert [a["text"] for a in losses["layout"]["annotations"]] == ["L_gem", "L_recon", "L_ssm"]
    names = {t["name"] for t in losses["data"]}
    assert names == {"dimerec-planted (GRW)", "dimerec-nogrw-planted (no GRW)"}
    assert len(losses["data"]) == 6


def test_steps_plot_every_run_that_has_step_metrics():
    at = open_page("steps")
    assert not at.error
    hr = figures(at)[0]
    lines = {t["name"]: t for t in hr["data"] if t.get("mode") == "lines+markers"}
    annotations = [a["text"] for a in hr["layout"]["annotations"]]
    oracle = next(a for a in annotations if a.startswith("oracle (planted truth)"))  # the ceiling, drawn
    assert float(oracle.split("<br>")[-1].rstrip("%")) > 75
    # each reference's label in the right margin, beside its dotted line, where no curve runs under it
    levels = {shape["y0"] for shape in hr["layout"]["shapes"]}
    for label in hr["layout"]["annotations"]:
        assert (label["xref"], label["x"], label["xanchor"]) == ("paper", 1, "left")
        assert min(abs(label["y"] - level) for level in levels) < 0.1
    chains = {d.name: json.loads((d / "step_metrics.json").read_text()) for d in DEFAULT.iterdir()
              if (d / "step_metrics.json").exists()}
    assert {"dimerec-planted", "dreamrec-planted", "diffurec-planted"} <= set(chains)  # three kinds of chain
    assert set(lines) == {f"{name} (built-in)" for name in chains}
    for name, sm in chains.items():  # x_T's guess at step 0 ... the guess from t = 1 at step T - 1, as step / T
        assert np.allclose(values(lines[f"{name} (built-in)"]["x"]), np.arange(sm["T"]) / sm["T"])  # T differs


@pytest.mark.parametrize("run", ["default/dreamrec-planted", "default/diffurec-planted"])
def test_the_euclidean_chains_play_on_the_denoising_page(run):
    at = open_page("denoising", run=run)
    assert not at.error
    data = player(at)["data"]
    assert "denoises in ordinary space" in data["note"]
    T = json.loads((DEFAULT / run.split("/")[1] / "step_metrics.json").read_text())["T"]
    shown = [text["step"] for text in data["steps"]]
    assert data["T"] == T and shown[0] == 0 and shown[-1] == T and len(data["frames"]) == len(shown) <= 41
    assert data["step"] == T and param(at, "step") == str(T)
    # issue 30: x_t is off the sphere; the globe shows its direction, as dots, and draws no paths across it
    for frame in data["frames"]:
        path, start, now, _ = frame["data"]
        assert all(v is None for v in path["x"]) and path["showlegend"] is False
        assert start["name"] == "direction of start x_T (noise)" and now["name"].startswith("direction of x_t now")
    assert "direction x_t/‖x_t‖" in data["key"] and "paths" not in data["key"]
    # the key names only what the model has: DreamRec's one guidance vector, DiffuRec's user vector, no GEM
    assert "GEM" not in data["key"] and ("guidance c" in data["key"]) == (run == "default/dreamrec-planted")
    from app import runs

    loaded = runs.load_run(run)
    view = runs.user_view(run, loaded.stamp, tuple(int(i) for i in loaded.history(int(param(at, "user")))), 6, 0)
    length = np.linalg.norm(view.samples.x_t[0], axis=-1).mean()  # x_T ~ N(0, I) in 64-d: about 8
    assert f"length ‖x_t‖ ≈ {length:.1f}" in data["steps"][0]["heading"]


def test_what_if_adding_items_changes_the_recommendations():
    at = open_page("what_if")
    assert not at.error
    before = at.dataframe[1].value["item"].tolist()
    history = list(at.session_state["whatif_hist"])
    counts = at.selectbox(key="whatif_category").options
    seen = {at.dataframe[0].value["category"].iloc[0]}
    new_category = next(c for c in counts if c not in seen)
    at.selectbox(key="whatif_category").set_value(new_category)
    at.number_input(key="whatif_count").set_value(8)
    at.button(key="whatif_add_category").click().run()
    assert not at.exception
    edited = at.session_state["whatif_hist"]
    assert len(edited) == min(len(history) + 8, 20)
    assert what_the_edit_did(at)  # checked against the lists in test_what_if_says_what_happened_from_the_lists
    assert edited[:len(edited) - 8] == history[len(history) + 8 - len(edited):]
    after = at.dataframe[1].value
    assert after["item"].tolist() != before
    assert (after["new?"] == "new").any()
    at.multiselect(key="whatif_remove").set_value([0, 1])
    at.button(key="whatif_remove_button").click().run()
    assert len(at.session_state["whatif_hist"]) == len(history) - 2
    at.button(key="whatif_reset").click().run()
    assert at.session_state["whatif_hist"] == history


def what_the_edit_did(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**What the edit did.**"))


def _leading(figure: dict) -> list[str]:
    """Each interest's leading category, read off a category-mix figure (one bar trace per category, in the order of
    the run's categories, each with the interests' shares): the largest share, the first category on a tie."""
    shares = np.stack([values(t["x"]) for t in figure["data"]])  # [categories, K]
    return [figure["data"][c]["name"] for c in shares.argmax(axis=0)]


def test_what_if_says_what_happened_from_the_lists_it_shows():
    """Issue 30: the sentence is computed from the numbers on the page (which interest moved to which category, how
    many items of which category entered and left the top 10); where the served list did not follow an interest
    that moved, the one-step mean's list is shown beside it and the sentence counts that category in it."""
    from collections import Counter

    at = open_page("what_if")
    for category in at.selectbox(key="whatif_category").options:  # the most popular 3 of a category, as the page
        at.button(key="whatif_reset").click().run()  # suggests, until one moves an interest the list does not follow
        at.selectbox(key="whatif_category").set_value(category)
        at.button(key="whatif_add_category").click().run()
        assert not at.exception
        if len(at.dataframe) == 3:
            break
    else:
        pytest.fail("no category moved an interest that the served top 10 did not follow")
    sentence = what_the_edit_did(at)
    before, after, mean = (frame.value for frame in at.dataframe)
    assert "one-step mean" in " ".join(m.value for m in at.markdown)
    pairs = lambda frame: set(zip(frame["item"], frame["category"]))  # noqa: E731
    entered = Counter(c for item, c in pairs(after) - pairs(before))
    left = Counter(c for item, c in pairs(before) - pairs(after))
    assert entered == Counter(after[after["new?"] == "new"]["category"])  # the "new" marks agree
    came, went = sentence.split("Into the top 10 came ")[1].split("; out went ")
    assert came.startswith(f"{sum(entered.values())} item(s): ")
    assert sorted(came.split(": ", 1)[1].split(", ")) == sorted(f"{n} {c}" for c, n in entered.items())
    went = went.split(".")[0]
    assert went.startswith(f"{sum(left.values())}: ")
    assert sorted(went.split(": ", 1)[1].split(", ")) == sorted(f"{n} {c}" for c, n in left.items())
    mix = [f for f in figures(at) if f["data"] and f["data"][0].get("type") == "bar"]
    was, now = _leading(mix[0]), _leading(mix[1])
    moved = [(k, a, b) for k, (a, b) in enumerate(zip(was, now)) if a != b]
    assert moved and sentence.count(" moved from ") == len(moved)
    assert all(f"I{k + 1} moved from {a} to {b}" in sentence for k, a, b in moved)
    missed = list(dict.fromkeys(b for _, _, b in moved if entered[b] == 0))
    assert missed and f"no {' or '.join(missed)} item entered it" in sentence
    in_mean = Counter(mean["category"])
    assert sentence.split("one-step mean's top 10 holds ")[1].startswith(
        ", ".join(f"{in_mean[c]} {c}" for c in missed))


def test_the_one_step_mean_ranks_by_the_first_steps_guess_averaged():
    """explore.mean_top is DimeRec's --serve mean through dimerec.serving: the list the evaluator ranks for the
    history under serve mean with 64 starts, by hand here; another list than one sample's; None without a mean."""
    import torch

    from dimerec import explore, sphere
    from dimerec.metrics import max_over_interests
    from dimerec.runs import load_run

    model, data, _ = load_run(DEFAULT / "dimerec-planted")
    hist = explore.history_tensor(data, data.sequences[5][:-1])
    ours = explore.mean_top(model, hist, 10, seed=3)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(3)  # evaluate.serving seeds the global stream so
        guidance, _ = model.guidance(hist)
        guess = model.first_step_guess(guidance, model.denoiser_for(guidance), 64)  # [1, 64, d] on the sphere
        by_hand = max_over_interests(guess.mean(1, keepdim=True), model.item_vectors()).topk(10).indices
    assert torch.allclose(sphere.normalize(guess).norm(dim=-1), torch.ones(1, 64))
    assert ours.tolist() == by_hand.tolist()
    assert len(set(ours[0]) & set(explore.served_top(model, hist)[0][0, :10])) < 8  # one sample's x_0: another list
    control, _, _ = load_run(DEFAULT / "dimerec-nodiff-planted")
    assert explore.mean_top(control, hist) is None


def test_the_preset_users_are_read_from_the_run_not_sampled_when_it_opens(monkeypatch):
    """Issue 30: a cold switch to a built-in run took a minute sampling 400 users' chains; the presets are stored with
    the run (presets.json, made by app/make_default_runs.py) and the app never samples to choose them."""
    from dimerec import explore

    def slow(*args, **kwargs):
        raise AssertionError("the app sampled chains to choose its preset users")

    monkeypatch.setattr(explore, "chain_presets", slow)
    monkeypatch.setattr(explore, "user_landings", slow)
    for name in ("dreamrec-planted", "diffurec-planted"):
        at = open_page("tour", run=f"default/{name}")
        stored = json.loads((DEFAULT / name / "presets.json").read_text())["presets"]
        options = at.selectbox(key="user_select").options
        assert options[:len(stored)] == [f"★ user {p['user']}" for p in stored]
        caption = " ".join(c.value for c in at.sidebar.caption)
        assert f"★ Picked because: {stored[0]['reason']}." in caption


@pytest.mark.parametrize("stale", [True, False])
def test_a_run_without_its_presets_or_with_stale_ones_picks_them_from_histories(tmp_path, stale):
    from dimerec import explore
    from dimerec.runs import load_run

    run = _run_dir(tmp_path, "mine")
    stored = json.loads((run / "presets.json").read_text())
    if stale:  # made from another checkpoint: they describe another model
        (run / "presets.json").write_text(json.dumps({**stored, "best.pt sha1": "0" * 40}))
    else:
        (run / "presets.json").unlink()
    at = open_page("tour", run="runs/mine")
    _, data, config = load_run(run)
    split = data.split(config["train_config"]["split_seed"])
    picks = explore.data_presets(data, explore.held_out_users(data, split), explore.item_categories(data)[1])
    assert [p[0] for p in picks] != [p["user"] for p in stored["presets"]]
    assert at.selectbox(key="user_select").options[:len(picks)] == [f"★ user {u}" for u, _ in picks]
    assert f"★ Picked because: {picks[0][1]}." in " ".join(c.value for c in at.sidebar.caption)


def _popularity_test_hr(name: str) -> float:
    from dimerec import explore
    from dimerec.runs import load_run

    _, data, config = load_run(DEFAULT / name)
    tc = config["train_config"]
    split = data.split(tc["split_seed"])
    return explore.popularity_reference(data, split.test, split.train, tc.get("protocol", "next-item"),
                                        tc.get("final_max_rows"), tc["seed"])["HR@50"]


def test_a_run_below_popularity_says_so_on_every_page(tmp_path):
    """Issue 30: a run that ranks below MostPopular says so in the sidebar, with both numbers read or computed from
    the run's files, and why it stopped; a run above popularity carries no such warning. The built-in runs are
    checked as they are (each on its side of the line), and a copy of DreamRec's whose metrics.json puts it below."""
    for name in ("dreamrec-planted", "dimerec-planted"):
        ours = json.loads((DEFAULT / name / "metrics.json").read_text())["test"]["HR@50"]
        pop = _popularity_test_hr(name)
        for page in ("tour", "steps"):
            at = open_page(page, run=f"default/{name}")
            warning = " ".join(w.value for w in at.sidebar.warning)
            if ours < pop:
                assert "Below popularity" in warning and f"{ours:.1%}" in warning and f"{pop:.1%}" in warning
            else:
                assert "Below popularity" not in warning
    pop = _popularity_test_hr("dreamrec-planted")
    low = _run_dir(tmp_path, "low", source="dreamrec-planted")
    metrics = json.loads((low / "metrics.json").read_text())
    metrics["test"]["HR@50"], metrics["stopped_by"] = pop / 2, "max_minutes"
    (low / "metrics.json").write_text(json.dumps(metrics))
    at = open_page("tour", run="runs/low")
    warning = " ".join(w.value for w in at.sidebar.warning)
    assert "Below popularity" in warning and f"{pop / 2:.1%}" in warning and f"{pop:.1%}" in warning
    assert "stopped by its budget" in warning
    at = open_page("steps", run="runs/low")
    assert steps_sentence(at, "low").startswith("**low** — **Below popularity on the test users**")
    assert "Below popularity" not in steps_sentence(at, "dimerec-planted (built-in)")


def test_the_item_map_places_the_user_and_leaves_the_random_start_off():
    """Issue 30: the Interests page draws the item table in 2-D (UMAP, fitted when the run was made: item_map.npz),
    the user's history at its items, the interests and the chain's x̂0 guesses placed by transform, and no x_T."""
    at = open_page("interests")
    assert not at.error
    (figure,) = [f for f in figures(at) if any(t.get("name") == "x_0 (step T, served)" for t in f["data"])]
    stored = np.load(DEFAULT / "dimerec-planted" / "item_map.npz")
    user = int(param(at, "user"))
    from app import runs

    run = runs.load_run(RUN)
    traces = {t["name"]: t for t in figure["data"]}
    hist = np.stack([values(traces["history items"]["x"]), values(traces["history items"]["y"])], 1)
    assert np.allclose(hist, stored["items_2d"][run.history(user)])
    b = int(np.flatnonzero(stored["users"] == user)[0])
    interests = traces["GEM interests I1…I4"]
    assert np.allclose(np.stack([values(interests["x"]), values(interests["y"])], 1),
                       stored["interests_2d"][b].astype(np.float32))
    steps = [n for n in traces if n.startswith("x̂0 at step") or n.startswith("x_0 (")]
    assert len(steps) == len(stored["steps"]) == 5 and not any("x_T" in n for n in traces)
    caption = " ".join(c.value for c in at.caption)
    assert "random start x_T is left off on purpose" in caption
    # a map worth reading: an item's 10 nearest items on it mostly share its category (a shuffled map: ~1/12)
    xy = stored["items_2d"]
    distance = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    near = np.argsort(distance, axis=1)[:, :10]
    assert (run.item_category[near] == run.item_category[:, None]).mean() > 0.8
    assert min(f.get("layout", {}).get("font", {}).get("size", 0) for f in [figure]) >= 16  # a projector's text
    # the categories are named where they gather
    names = {a["text"].replace("<b>", "").replace("</b>", "") for a in figure["layout"]["annotations"]}
    assert len(names & set(run.categories)) >= 10
    at = open_page("interests", run="default/dreamrec-planted")  # its item vectors mix the categories (8% alike)
    (figure,) = [f for f in figures(at) if any(t.get("name") == "x_0 (step T, served)" for t in f["data"])]
    texts = [a["text"] for a in figure["layout"]["annotations"]]
    assert texts == ["The categories are mixed on this map:<br>this run's item vectors do not keep them apart."]


def test_a_run_without_a_stored_item_map_fits_one_on_request(tmp_path, monkeypatch):
    """A run under runs/ has no item_map.npz: the page offers to fit one (UMAP compiles for up to a minute on its
    first use) and then places the user on it with the fitted map's transform."""
    from dimerec import explore

    class Linear:  # stands in for UMAP (seconds to compile): a fixed linear map to 2-D, the same transform
        def transform(self, x):
            return np.asarray(x, dtype=np.float32)[:, :2] * 3

    def fit(item_vectors, **kwargs):
        return explore.ItemMap(reducer=Linear(), items_2d=Linear().transform(item_vectors), fitted_on=len(item_vectors))

    monkeypatch.setattr(explore, "fit_item_map", fit)
    run = _run_dir(tmp_path, "no-map")
    (run / "item_map.npz").unlink()
    at = open_page("interests", run="runs/no-map")
    assert not [f for f in figures(at) if any(t.get("name") == "history items" for t in f["data"])]
    at.button(key="item_map_fit").click().run()
    assert not at.exception
    (figure,) = [f for f in figures(at) if any(t.get("name") == "x_0 (step T, served)" for t in f["data"])]
    from app import runs

    loaded = runs.load_run("runs/no-map")
    user = int(param(at, "user"))
    traces = {t["name"]: t for t in figure["data"]}
    interests = loaded.model.interests(loaded.hist_tensor(loaded.history(user)))[0][0].detach().numpy()
    assert np.allclose(values(traces["GEM interests I1…I4"]["x"]), interests[:, 0] * 3, atol=1e-5)
    assert "once per run on this server" in " ".join(c.value for c in at.caption)


@pytest.mark.real_data
def test_a_movielens_run_shows_real_titles_and_genres(tmp_path, real_data_dir):
    """An (untrained) DimeRec run on ML-1M under runs/: the app reads the data the run names."""
    import torch

    from dimerec.data import load_dataset
    from dimerec.models import MODELS

    data = load_dataset("ml-1m", real_data_dir)
    model_cls = MODELS["dimerec"]
    model = model_cls(data.n_items, data.max_len, model_cls.Config())
    run = tmp_path / "runs" / "dimerec-ml1m"
    run.mkdir(parents=True)
    config = {"model": "dimerec", "dataset": "ml-1m", "data_dir": str(real_data_dir),
              "model_config": model.config.__dict__, "train_config": {"split_seed": 0}}
    (run / "config.json").write_text(json.dumps(config))
    torch.save({"model": model.state_dict()}, run / "best.pt")
    at = open_page("denoising", run="runs/dimerec-ml1m")
    assert not at.error
    shown = player(at)["data"]
    table = shown["steps"][-1]["items"]
    titles, genres = set(data.titles), {g for cats in data.item_categories for g in cats}
    assert {row["title"] for row in table} <= titles
    assert all(set(row["category"].split(", ")) <= genres for row in table)
    legend = {t["name"] for t in shown["sphere"]["data"] if t.get("legendgroup") == "items"}
    assert {"Drama", "Comedy"} <= legend


# ---- Paper vs ours: the tables `python -m dimerec reproduce` writes ----------------------------------------------

@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """`reproduce dimerec` and `fig5` (which reads dimerec's runs) on a 200-user planted world, one seed, 5 steps
    per run (--quick's 60 steps take three times as long, and the page only reads the files)."""
    from dimerec.cli import main
    from dimerec.data import planted

    root = tmp_path_factory.mktemp("reproduce")
    full_size = planted.make_planted
    with pytest.MonkeyPatch.context() as patch:  # only while generating: the built-in runs need the full world
        # a run's own recorded world (planted_params, its 200 users) is rebuilt as recorded
        patch.setattr(planted, "make_planted", lambda seed=0, **world: full_size(**{"n_users": 200, **world},
                                                                                 seed=seed))
        for name in ("dimerec", "fig5"):
            assert main(["reproduce", name, "--dataset", "planted", "--seeds", "1", "--max-minutes", "0.5",
                         "--max-steps", "5", "--valid-max-rows", "100", "--runs", str(root / "runs"),
                         "--results", str(root / "results")]) == 0
    return root / "results"


def test_paper_vs_ours_lists_the_experiments_and_shows_their_tables(results_dir, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("DIMEREC_RESULTS", str(results_dir))
    at = open_page("results")
    assert not at.error
    assert [o.split(":")[0] for o in at.selectbox(key="results_experiment").options] == ["dimerec", "fig5"]
    assert at.radio(key="results_dataset_dimerec").options == ["planted"]
    assert param(at, "experiment") == "dimerec" and param(at, "dataset") == "planted"
    ours = pd.read_csv(results_dir / "dimerec_planted.csv").set_index("model").loc["DimeRec (ours)"]
    table = " ".join(m.value for m in at.markdown)
    assert f"| DimeRec (ours) | 1 | {ours['HR@10']:.2f} ± 0.00 |" in table
    assert "# dimerec on planted" not in table  # the title line becomes the subheader
    assert at.subheader[0].value == "dimerec on planted"
    assert len(at.get("image")) == (results_dir / "dimerec_planted.png").is_file()
    assert {b.label for b in at.get("download_button")} == {"⬇ dimerec_planted.csv", "⬇ dimerec_planted.html"}
    at.selectbox(key="results_experiment").set_value("fig5").run()
    assert not at.exception and not at.error
    assert "of x̂0 predicted at each reverse step" in " ".join(m.value for m in at.markdown)
    assert param(at, "experiment") == "fig5"
    at = open_page("results", experiment="fig5", dataset="planted")  # a link opens that table
    assert at.selectbox(key="results_experiment").value == "fig5"
    at = open_page("results", experiment="table9")
    assert "'table9' from the link has no results" in errors(at)
    assert at.selectbox(key="results_experiment").value == "dimerec"


def test_paper_vs_ours_shows_results_md_first_and_skips_other_files(results_dir, monkeypatch, tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(results_dir, folder)
    (folder / "RESULTS.md").write_text("# Claims\n\n| claim | paper | ours |\n|---|---|---|\n"
                                       "| GRW helps | yes | no |\n")
    (folder / "dimerec_planted_tuning.csv").write_text("lr,HR@50\n0.001,0.5\n")
    (folder / "bench.json").write_text("{}")
    monkeypatch.setenv("DIMEREC_RESULTS", str(folder))
    at = open_page("results")
    assert not at.error
    assert at.expander[0].label.endswith("(RESULTS.md)")
    assert "| GRW helps | yes | no |" in at.expander[0].markdown[0].value
    assert [o.split(":")[0] for o in at.selectbox(key="results_experiment").options] == ["dimerec", "fig5"]


def test_paper_vs_ours_without_results_shows_the_command_that_makes_them(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMEREC_RESULTS", str(tmp_path / "nothing-yet"))
    at = open_page("results")
    assert not at.error
    assert "No results in" in at.info[0].value
    assert at.code[0].value.startswith("python -m dimerec reproduce dimerec --dataset planted")


# ---- dimerec.explore: the read-outs behind the pages ------------------------------------------------------------

def test_sphere_projection_is_an_orthonormal_linear_view_that_keeps_categories_apart():
    import torch

    from dimerec import explore

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 64))
    labels = np.repeat(np.arange(12), 40)
    items = torch.from_numpy(centres[labels] + 0.3 * rng.normal(size=(480, 64))).float()
    for method, given in (("categories", labels), ("pca", None)):
        projection = explore.fit_sphere_projection(items, given)
        assert projection.method == method
        assert np.allclose(projection.components @ projection.components.T, np.eye(3), atol=1e-5)
        points = projection(items)
        assert np.allclose(np.linalg.norm(points, axis=1), 1, atol=1e-5)
        assert np.allclose(projection(2.5 * items[:5]), points[:5], atol=1e-5)  # directions only
    categories = explore.fit_sphere_projection(items, labels)
    pca = explore.fit_sphere_projection(items)
    assert explore.neighbour_agreement(categories(items), labels) > 0.9
    assert explore.neighbour_agreement(categories(items), labels) > explore.neighbour_agreement(pca(items), labels)
    noise = categories(torch.randn(4000, 64))  # a random start lands anywhere on the picture
    assert np.linalg.norm(noise.mean(axis=0)) < 0.1


def test_great_circle_runs_on_the_sphere_between_its_ends():
    from dimerec.explore import great_circle

    a, b = np.array([1.0, 0, 0]), np.array([0, 0.6, 0.8])
    arc = great_circle(a, b, 9)
    assert np.allclose(arc[0], a) and np.allclose(arc[-1], b)
    assert np.allclose(np.linalg.norm(arc, axis=1), 1)
    steps = np.arccos(np.clip((arc[1:] * arc[:-1]).sum(axis=1), -1, 1))
    assert np.allclose(steps, np.pi / 2 / 8)  # evenly spaced along the quarter circle


def test_sample_user_reads_out_every_reverse_step():
    import torch

    from dimerec import explore
    from dimerec.models.dimerec import DimeRec, DimeRecConfig

    torch.manual_seed(0)
    model = DimeRec(50, 6, DimeRecConfig(dim=8, T=4, n_interests=2))
    hist = torch.tensor([[50, 50, 1, 2, 3, 4]])
    samples = explore.sample_user(model, hist, n_samples=3, seed=1, k_top=10, n_sample_top=2)
    assert samples.steps == [4, 3, 2, 1]
    assert samples.x_t.shape == (5, 3, 8) and samples.recommend.shape == (5, 3, 8)
    assert np.allclose(samples.recommend[-1], samples.x_t[-1])  # after the last step: x_0 itself
    assert samples.top.shape == (5, 10) and samples.sample_top.shape == (5, 3, 2)
    again = explore.sample_user(model, hist, n_samples=3, seed=1, k_top=10, n_sample_top=2)
    assert np.array_equal(samples.x_t, again.x_t)  # seeded
    ids, scores = explore.nearest_items(torch.from_numpy(samples.recommend[-1:, :1]), model.item_vectors(), 10)
    assert list(ids[0][:2]) == list(samples.sample_top[-1, 0])  # sample 1's own nearest items
    assert np.all(np.diff(scores[0]) <= 1e-6)


SERVING_MODES = [{}, {"serve_samples": 4}, {"serve_samples": 4, "serve_merge": "mixture"},
                 {"serve": "mean", "serve_samples": 4}]


def test_the_app_shows_the_top_50_the_evaluator_scores_in_every_serving_mode(tmp_path):
    """Issue 29, defect 1: for each way a DimeRec run can serve (its reverse chain's end x_0 from one sample or
    several merged by max or as a mixture, or --serve mean), the top 50 the app shows a user is the list
    `evaluate` ranks for that user's history with the same seed, not a max over the samples drawn on the page."""
    from app import runs
    from dimerec.evaluate import served_lists
    from dimerec.runs import load_run
    from dimerec.serving import serving_of

    seed, lists_by_mode = 7, []
    for i, serving in enumerate(SERVING_MODES):
        run = _run_dir(tmp_path, f"serve-{i}")
        config = json.loads((run / "config.json").read_text())
        config.setdefault("serving", {}).update(serving)  # a built-in run's config.json is older: no "serving"
        (run / "config.json").write_text(json.dumps(config))
        model, data, config = load_run(run)
        serve = serving_of(model, config["serving"])
        shown = runs.load_run(f"runs/serve-{i}")
        users = shown.held_out[:3]
        # each user scored alone under the loo protocol: one row, the history the app shows, the same seed
        evaluator = np.concatenate([lists["final"] for u in users
                                    for _, _, lists in served_lists(model, data, np.array([u]), "loo", seed=seed,
                                                                                   serve=serve)])
        app = np.stack([runs.user_view(shown.id, shown.stamp, tuple(shown.history(u).tolist()), runs.DEFAULT_SAMPLES,
                                       seed).top for u in users])
        assert app.shape == (3, 50) and (app == evaluator).all(), serving
        lists_by_mode.append(app.tobytes())
    assert len(set(lists_by_mode)) == len(SERVING_MODES)  # the modes serve different lists: each was exercised


def steps_sentence(at: AppTest, label: str) -> str:
    return next(m.value for m in at.markdown if m.value.startswith(f"**{label}**"))


def test_the_steps_page_states_what_each_chain_does_from_its_own_files(tmp_path):
    """The verdict is computed from step_metrics.json: the built-in chain falls; the same run with its curve made
    to rise says so; the references are read or computed from the run files (issue 17)."""
    at = open_page("steps")
    falling = steps_sentence(at, "dimerec-planted (built-in)")
    assert "The ceiling (an oracle that knows the generator): 8" in falling  # planted's oracle, about 83%
    steps = json.loads((DEFAULT / "dimerec-planted" / "step_metrics.json").read_text())
    first, last = steps["steps"][0]["HR@50"], steps["steps"][-1]["HR@50"]
    assert first > last and "falls" in falling and f"{first:.1%}" in falling and f"{last:.1%}" in falling
    control = json.loads((DEFAULT / "dimerec-nodiff-planted" / "metrics.json").read_text())["valid"]["HR@50"]
    assert f"no-diffusion control {control:.1%}" in falling and "below no-diffusion control" in falling
    # the same run, its curve reversed: the sentence follows the file
    runs_dir = tmp_path / "runs"
    shutil.copytree(DEFAULT / "dimerec-planted", runs_dir / "rising")
    rising_steps = [{**s, "HR@50": r["HR@50"]} for s, r in zip(steps["steps"], reversed(steps["steps"]))]
    (runs_dir / "rising" / "step_metrics.json").write_text(json.dumps({**steps, "steps": rising_steps}))
    shutil.copytree(DEFAULT / "dimerec-planted", runs_dir / "another")
    at = open_page("steps", run="runs/rising")  # shown at first: the built-ins and the sidebar's run, not every run
    picker = at.multiselect(key="steps_runs")
    assert "another" in picker.options and "another" not in picker.value and "rising" in picker.value
    rising = steps_sentence(at, "rising")
    assert "rises" in rising and "as the paper's Fig. 5 shows" in rising and rising != falling
    figure = figures(at)[0]
    annotations = " ".join(a.get("text", "") for a in figure["layout"].get("annotations", []))
    assert "popularity" in annotations and "no-diffusion control" in annotations


def test_the_steps_page_draws_only_the_chains_on_the_sidebar_runs_data(tmp_path):
    """A chain on other data (here a smaller planted world, as a run written before fingerprints records it: its
    size) is neither offered nor drawn against the sidebar run's references; the page says how many it left out."""
    other = tmp_path / "runs" / "small-world"
    shutil.copytree(DEFAULT / "dimerec-planted", other)
    config = json.loads((other / "config.json").read_text())
    config.pop("data_fingerprint", None)  # as a run written before fingerprints: told apart by its size alone
    config["dataset_stats"] = {**config["dataset_stats"], "users": 400}
    (other / "config.json").write_text(json.dumps(config))
    at = open_page("steps")
    picker = at.multiselect(key="steps_runs")
    assert "small-world" not in picker.options and "dimerec-planted (built-in)" in picker.value
    assert "1 run(s) on other data are left out" in picker.help
    assert "small-world" not in trace_names(figures(at)[0])


def test_a_run_on_a_smaller_planted_world_opens_on_its_own_data(tmp_path):
    """A notebook's fast run (a 400-user planted world) opens on its own world instead of failing its fingerprint
    against the 2,000-user default, even without the world's parameters in its config.json (runs before them)."""
    from dimerec.data.planted import make_planted
    from dimerec.trainer import train_model

    small = make_planted(seed=0, n_users=400)
    run = tmp_path / "runs" / "fast" / "nb-small"
    train_model("dimerec-nodiff", small, out=run, max_steps=3, valid_max_rows=50, final_max_rows=50)
    config = json.loads((run / "config.json").read_text())
    assert config["planted_params"]["n_users"] == 400
    del config["planted_params"]  # as the notebooks' runs written before this was recorded
    (run / "config.json").write_text(json.dumps(config))
    at = open_page("interests", run="runs/fast/nb-small")
    assert not at.error, [e.value for e in at.error]
    users = at.selectbox(key="user_select").options  # the held-out users of the 400-user world's own split
    held_out = np.concatenate([small.split(0).valid, small.split(0).test])
    assert sorted(int(u.split()[-1]) for u in users) == sorted(u for u in held_out if len(small.sequences[u]) >= 2)


def test_tour_chapter_five_sets_the_run_beside_its_references():
    at = open_page("tour")
    at.radio(key="tour_chapter").set_value(at.radio(key="tour_chapter").options[4]).run()
    text = next(m.value for m in at.markdown if "Beside it" in m.value)
    control = json.loads((DEFAULT / "dimerec-nodiff-planted" / "metrics.json").read_text())["test"]["HR@50"]
    assert f"no-diffusion control {control:.1%}" in text and "Better than this run: no-diffusion control" in text
    from dimerec.data.planted import make_planted
    from dimerec.explore import oracle_reference

    data = make_planted(seed=0)  # the built-in world; its test rows, as the run's metrics.json counts them
    config = json.loads((DEFAULT / "dimerec-planted" / "config.json").read_text())["train_config"]
    ceiling = oracle_reference(data, data.split(config["split_seed"]).test, max_rows=config.get("final_max_rows"),
                               seed=config["seed"])
    assert f"ranking by the generator's own probabilities, is {ceiling['HR@50']:.1%}" in text


def test_tour_chapter_lives_in_the_url_and_a_bad_one_falls_back():
    at = open_page("tour", chapter=3)
    assert at.radio(key="tour_chapter").value == at.radio(key="tour_chapter").options[2]
    at.radio(key="tour_chapter").set_value(at.radio(key="tour_chapter").options[4]).run()
    assert param(at, "chapter") == "5"
    at = open_page("tour", chapter=9)
    assert "Chapter '9' from the link is not 1 to 5" in errors(at)
    assert at.radio(key="tour_chapter").value == at.radio(key="tour_chapter").options[0]


def test_no_diffusion_run_hides_the_sampling_controls_and_every_page_has_the_glossary():
    at = open_page("denoising", run=NODIFF)
    keys = {w.key for w in [*at.slider, *at.number_input]}
    assert "denoise_samples" not in keys and "denoise_seed" not in keys
    at = open_page("denoising")
    assert {"denoise_samples", "denoise_seed"} <= {w.key for w in [*at.slider, *at.number_input]}
    for page in ("tour", "steps", "training"):
        at = open_page(page)
        glossary = next(e for e in at.sidebar.expander if e.label == "Glossary")
        assert "**GEM**" in glossary.markdown[0].value and "**HR@50**" in glossary.markdown[0].value


def test_true_item_ranks_counts_from_one_and_marks_a_miss_with_nan():
    from dimerec.explore import true_item_ranks

    top = np.array([[5, 7, 9], [7, 5, 9], [1, 2, 3]])
    ranks = true_item_ranks(top, 7)
    assert ranks[:2].tolist() == [2.0, 1.0] and np.isnan(ranks[2])
    assert true_item_ranks(top[None], 9).shape == (1, 3)


# ---- issue 30: one number format, scores explained, no-GRW said and coloured alike, redundant interests ----------

def test_numbers_are_percentages_on_the_sidebar_the_tour_and_the_steps_table():
    test = json.loads((DEFAULT / "dimerec-planted" / "metrics.json").read_text())["test"]
    at = open_page("tour", chapter=5)
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert f"HR@50 {test['HR@50']:.1%}" in sidebar and f"{test['HR@50']:.3f}" not in sidebar
    page = " ".join(m.value for m in at.markdown)
    assert f"**{test['HR@50']:.1%}**" in page and f"NDCG@50 = {test['NDCG@50']:.1%}" in page
    assert "not a cosine" in " ".join(c.value for c in at.caption)  # the score is explained where it is shown
    at = open_page("steps")
    table = at.dataframe[0]
    config = json.loads(table.proto.columns)
    final = json.loads((DEFAULT / "dimerec-planted" / "step_metrics.json").read_text())["final"]["HR@50"]
    row = table.value.set_index("run").loc["dimerec-planted (built-in)"]
    for column in ("HR@50 at step 0", "best HR@50", "final HR@50 (step T)"):
        assert config[column]["type_config"]["format"] == "%.1f%%", config[column]
    assert row["final HR@50 (step T)"] == pytest.approx(100 * final)  # 38.1%, not 0.381


def test_training_says_what_no_grw_shows_and_no_grw_keeps_one_colour():
    import pandas as pd

    from app.figures import NO_GRW

    at = open_page("training")
    grw = json.loads((DEFAULT / "dimerec-planted" / "metrics.json").read_text())["test"]["HR@50"]
    nogrw = json.loads((DEFAULT / "dimerec-nogrw-planted" / "metrics.json").read_text())["test"]["HR@50"]
    recon = pd.read_csv(DEFAULT / "dimerec-nogrw-planted" / "losses.csv")["L_recon"].to_numpy()
    n = max(1, len(recon) // 10)  # a tenth of the steps, as explore.loss_summary
    text = " ".join(m.value for m in at.markdown)
    assert f"{'above' if nogrw > grw else 'below'} the GRW run's {grw:.1%}" in text, text
    assert f"its L_recon {'rises' if recon[-n:].mean() > recon[:n].mean() else 'falls'}" in text
    losses, valid = figures(at)[:2]
    for fig in (losses, valid):
        colours = {t["name"]: t["line"]["color"] for t in fig["data"]}
        assert colours["dimerec-nogrw-planted (no GRW)"] == NO_GRW, colours
        assert colours["dimerec-planted (GRW)"] != NO_GRW
    steps = figures(open_page("steps"))[0]
    colours = {t["name"]: t["line"]["color"] for t in steps["data"] if t.get("mode") == "lines+markers"}
    assert colours["dimerec-nogrw-planted (built-in)"] == NO_GRW
    assert sum(c == NO_GRW for c in colours.values()) == 1


def test_redundant_interests_are_named_and_the_heatmap_reads_on_a_projector():
    from dimerec.explore import redundant_interests

    assert redundant_interests(np.array([[1, 2, 3, 4], [4, 3, 2, 1], [5, 6, 7, 8]]), n=4) == [(0, 1, 4)]
    assert redundant_interests(np.array([[1, 2, 3, 4], [1, 2, 7, 8]]), n=4) == []
    at = open_page("interests", user=1)  # user 1: interests I2 and I4 share all of their 10 nearest items
    assert "I2 and I4 share 10 of their 10 nearest items" in " ".join(m.value for m in at.markdown)
    heatmap = figures(at)[0]["data"][0]
    low = heatmap["colorscale"][0][1]  # the colour of zero attention
    rgb = ([int(low[i:i + 2], 16) for i in (1, 3, 5)] if low.startswith("#") else
           [int(v) for v in low[low.index("(") + 1:-1].split(",")])
    r, g, b = (v / 255 for v in rgb)
    assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5, low  # not near white: the cells stay apart when projected


def test_the_lesson_shows_the_mean_and_the_samples_as_dimerec_scores_them():
    """Issue 30: the "Sample or mean?" page's HR@50 of the one-step mean and of one sample are the ones dimerec's
    evaluator gives for the run on the same rows, and one sample's mixture is the chain as served."""
    from dimerec.evaluate import evaluate
    from dimerec.explore import lesson_servings
    from dimerec.runs import load_run
    from dimerec.serving import serving_of

    model, data, config = load_run(DEFAULT / "dimerec-planted")
    serve, tc = serving_of(model, config["serving"]), config["train_config"]
    lesson = json.loads((DEFAULT / "dimerec-planted" / "sample_or_mean.json").read_text())
    users = data.split(tc["split_seed"]).valid

    def hr50(how) -> float:
        return evaluate(model, data, users, tc["protocol"], seed=tc["seed"], max_rows=lesson["max_rows"],
                        serve=how)["final"]["HR@50"]

    mean, one = hr50(lesson_servings(serve, 1)["mean"]), hr50(lesson_servings(serve, 1)["mixture"])
    assert lesson["mean"]["HR@50"] == mean and lesson["mixture"]["1"]["HR@50"] == one
    assert one == hr50(serve)  # the mixture of one sample ranks as the chain the run serves
    at = open_page("sample_or_mean", run="default/dimerec-planted")
    headline = next(m.value for m in at.markdown if m.value.startswith("**HR@50 on"))
    assert f"one chain **{one:.1%}**" in headline and f"the mean **{mean:.1%}**" in headline
    table = at.dataframe[0].value
    assert list(table.columns) == ["#", "mean x̂0", "mixture, S = 1"] and len(table) == 10
    at.select_slider(key="lesson_samples").set_value(16).run()
    headline = next(m.value for m in at.markdown if m.value.startswith("**HR@50 on"))
    assert f"the mixture of S = 16 **{lesson['mixture']['16']['HR@50']:.1%}**" in headline
    assert list(at.dataframe[0].value.columns)[2] == "mixture, S = 16"


def test_the_lesson_says_plainly_when_a_run_cannot_be_served_both_ways():
    at = open_page("sample_or_mean", run="default/dimerec-nodiff-planted")
    assert any("This lesson needs a run whose chain can be served both ways" in i.value for i in at.info)


def test_a_runs_lesson_is_kept_in_its_folder_for_the_serving_it_was_made_for(tmp_path):
    """dimerec.runs.stored_lesson, the one writer of sample_or_mean.json: a file made for the run's serving is read as
    it is; one made for another serving, or unreadable, is computed again and replaced."""
    import dataclasses

    from dimerec.runs import LESSON_FILE, load_run, stored_lesson
    from dimerec.serving import serving_of

    run = tmp_path / "run"
    shutil.copytree(DEFAULT / "dimerec-planted", run)
    model, data, config = load_run(run)
    serve = serving_of(model, config["serving"])
    kept = {"serving": dataclasses.asdict(serve), "mean": {"HR@50": -1.0}}  # a value no computation gives
    (run / LESSON_FILE).write_text(json.dumps(kept))
    assert stored_lesson(run, model, data, config, serve, max_rows=40) == kept
    other = dataclasses.replace(serve, serve_samples=3)
    fresh = stored_lesson(run, model, data, config, other, max_rows=40)
    assert fresh["serving"] == dataclasses.asdict(other) and fresh["max_rows"] == 40 and fresh["mean"]["HR@50"] >= 0
    assert json.loads((run / LESSON_FILE).read_text()) == fresh
    (run / LESSON_FILE).write_text("{not json")
    assert stored_lesson(run, model, data, config, other, max_rows=40) == fresh  # seeded: the same numbers


def test_the_player_loads_the_partial_plotly_bundle_only_where_it_matches_the_installed_plotly(tmp_path, monkeypatch):
    """The gl3d partial bundle (a third of the full one: Denoising opens sooner) when its plotly.js version is the
    installed plotly's own; a bundle of another version is never mixed with the figures plotly writes."""
    import plotly

    from app import player

    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert player.plotly_bundle() == player.PARTIAL_BUNDLE  # requirements.txt pins the plotly that matches it
    assert player._bundle_version(player.PARTIAL_BUNDLE) == player._bundle_version(full)
    assert player.PARTIAL_BUNDLE.stat().st_size < full.stat().st_size / 2
    stale = tmp_path / "plotly-gl3d.min.js"
    stale.write_bytes(player.PARTIAL_BUNDLE.read_bytes()[:400].replace(
        f"v{player._bundle_version(full)}".encode(), b"v0.0.1") + b"\n")
    monkeypatch.setattr(player, "PARTIAL_BUNDLE", stale)
    assert player._bundle_version(stale) == "0.0.1" and player.plotly_bundle() == full


def test_reference_labels_keep_apart_and_below_the_top():
    from app.figures import spread_labels

    placed = spread_labels({"a": 0.50, "b": 0.51, "c": 0.80, "d": 0.20}, gap=0.05, top=0.9)
    assert placed == pytest.approx({"d": 0.20, "a": 0.50, "b": 0.55, "c": 0.80})  # b moved up off a, no more
    assert spread_labels({"x": 0.88, "y": 0.89}, gap=0.05, top=0.9) == pytest.approx({"x": 0.85, "y": 0.90})
