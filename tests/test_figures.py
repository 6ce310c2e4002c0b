"""The committed figures' layout rules (dimerec/figures.py), on small hand-made curves."""
import time

import pandas as pd
import plotly.graph_objects as go

from dimerec import figures
from dimerec.processes import stat_fields


def curve(labels_and_starts: dict[str, int]) -> pd.DataFrame:
    rows = [{"model": label, "step": step, "t": t, "HR@50 mean": 40.0 + t, "HR@50 std": 0.0}
            for label, start in labels_and_starts.items() for step, t in enumerate(range(start, 0, -1), start=1)]
    return pd.DataFrame(rows)


def test_chain_panels_name_each_line_by_its_panel_and_draw_the_default_chain_behind_each_lever():
    """Colours restart in each panel, so a legend of bare labels matched two lines of one colour to no panel."""
    groups = {"References": ["DimeRec (ours)"], "H1: guidance": ["w = 0", "w = 1"], "H3: partial": ["t* = 5"]}
    figure = figures.chain_panels(curve({"DimeRec (ours)": 20, "w = 0": 20, "w = 1": 20, "t* = 5": 5}), groups,
                                  {"control": 60.0}, "title", default_chain="DimeRec (ours)")
    shown = [trace for trace in figure.data if trace.showlegend is not False]
    assert [trace.name for trace in shown] == ["References: DimeRec (ours)", "H1: w = 0", "H1: w = 1", "H3: t* = 5"]
    colours = {trace.name: trace.line.color for trace in shown}
    assert colours["H1: w = 0"] != colours["H1: w = 1"]
    grey = [trace for trace in figure.data if trace.showlegend is False]
    # behind each hypothesis's panel (x2, x3), not in the references' own panel, and the full chain's 20 steps
    assert sorted(trace.xaxis for trace in grey) == ["x2", "x3"] and all(len(trace.x) == 20 for trace in grey)
    assert {trace.xaxis for trace in shown if trace.name.startswith("H3")} == {"x3"}


def test_chain_panels_without_a_default_chain_draw_only_the_groups_lines():
    groups = {"H1: guidance": ["w = 0"]}
    figure = figures.chain_panels(curve({"w = 0": 20}), groups, {}, "title")
    assert [trace.name for trace in figure.data] == ["H1: w = 0"]


def test_chain_panels_draw_a_levers_own_control_dashed_in_its_panel_only():
    """H7's pair is judged against its own control (55.8 on ML-1M), not the references' one (52.6): its panel
    showed only the latter."""
    groups = {"References": ["DimeRec (ours)"], "H3: partial": ["t* = 5"], "H7: strong base": ["ours on SASRec"]}
    figure = figures.chain_panels(curve({"DimeRec (ours)": 10, "t* = 5": 5, "ours on SASRec": 10}), groups,
                                  {"control": 52.6}, "title", own_controls={"H7: strong base": 55.8})
    dashed = [shape for shape in figure.layout.shapes if shape.line.dash == "dash"]
    assert [(shape.y0, shape.xref) for shape in dashed] == [(55.8, "x3 domain")]
    dotted = [shape for shape in figure.layout.shapes if shape.line.dash == "dot"]
    assert sorted(shape.xref for shape in dotted) == ["x domain", "x2 domain", "x3 domain"]
    low, high = figure.layout.yaxis.range  # autorange ignores lines: the control drew on the panel's top edge
    assert high > 55.8 and low < 41  # the curves span 41-50
    assert {shape.y0 for shape in dotted} == {52.6}


def test_a_levers_own_control_is_named_only_where_its_panel_holds_the_words():
    """On planted's eight panels "its own control" over H5 ran into H7's; the title names the dashed line."""
    def named(n_groups):
        groups = {"References": ["DimeRec (ours)"], **{f"H{i}: lever": [f"v{i}"] for i in range(1, n_groups)}}
        figure = figures.chain_panels(curve({"DimeRec (ours)": 20, **{f"v{i}": 20 for i in range(1, n_groups)}}),
                                      groups, {"DimeRec (ours, serve mean)": 43.0}, "title",
                                      own_controls={"H1: lever": 55.8})
        assert [shape.y0 for shape in figure.layout.shapes if shape.line.dash == "dash"] == [55.8]  # drawn always
        return [a.text for a in figure.layout.annotations if a.text == figures.OWN_CONTROL_LABEL]

    assert named(3) == [figures.OWN_CONTROL_LABEL]
    assert named(8) == []


def test_chain_panels_widen_the_references_panel_to_its_longest_name():
    """With seven equal panels (ML-1M's diffusion table) "DimeRec (ours, serve mean)" ran across the H1 panel."""
    def widths(n_groups):
        groups = {"References": ["DimeRec (ours)"], **{f"H{i}: lever": [f"v{i}"] for i in range(1, n_groups)}}
        figure = figures.chain_panels(curve({"DimeRec (ours)": 20, **{f"v{i}": 20 for i in range(1, n_groups)}}),
                                      groups, {"DimeRec (ours, serve mean)": 43.0, "MostPopular": 11.7}, "title")
        axes = [figure.layout[f"xaxis{i if i > 1 else ''}"].domain for i in range(1, n_groups + 1)]
        return [round(high - low, 3) for low, high in axes]

    three, seven = widths(3), widths(7)
    assert len(set(three)) == 1  # room enough: equal panels
    assert seven[0] > 1.5 * seven[1] and len(set(seven[1:])) == 1
    assert seven[0] * 1000 >= 9 * len("DimeRec (ours, serve mean)")


def test_metric_bars_lie_level_with_each_row_named_once_in_the_tables_order():
    """Slanted names under vertical bars ran off the PNG for the loo rows; horizontal bars keep each name level."""
    table = pd.DataFrame({"model": ["MostPopular", "GRU4Rec (RecBole's ML-1M settings, batches of 4,096)"],
                          "HR@50": [11.0, 51.4], "HR@50 std": [0.0, 0.3], "NDCG@50": [2.8, 18.2],
                          "NDCG@50 std": [0.0, 0.1]})
    figure = figures.metric_bars(table, "title")
    assert [trace.orientation for trace in figure.data] == ["h", "h"]
    assert [list(trace.y) for trace in figure.data] == [list(table["model"])] * 2
    assert list(figure.data[1].x) == [2.8, 18.2] and list(figure.data[1].error_x.array) == [0.0, 0.1]
    # the first row at the top, and the names written once: the second panel shares the first's axis
    assert figure.layout.yaxis.autorange == "reversed" and figure.layout.yaxis2.matches == "y"


def test_table2_bars_draw_the_majority_floor_across_the_probe_panel_only():
    summary = pd.DataFrame({"model": ["SASRec", "DimeRec (ours)"], "probe accuracy": [87.0, 79.0],
                            "probe accuracy std": [0.5, 0.6], "majority floor": [29.2, 29.2],
                            "categories in top 100": [15.2, 14.7], "categories in top 100 std": [0.1, 0.4]})
    figure = figures.table2_bars(summary, "title")
    floor = next(trace for trace in figure.data if trace.name == "majority class")
    assert list(floor.x) == [29.2, 29.2] and list(floor.y) == ["SASRec", "DimeRec (ours)"] and floor.xaxis == "x"
    bars = [trace for trace in figure.data if trace.type == "bar"]
    assert [(trace.xaxis, list(trace.x)) for trace in bars] == [("x", [87.0, 79.0]), ("x2", [15.2, 14.7])]
    assert all(trace.orientation == "h" for trace in bars)


def test_the_lowest_references_name_sits_above_its_line_and_the_others_below():
    """Hung under its line like the others, "MostPopular" (the lowest) printed over the x-axis tick labels."""
    references = {"no-diffusion control": 52.6, "DimeRec (ours, serve mean)": 43.0, "MostPopular": 12.0}
    figure = figures.chain_panels(curve({"DimeRec (ours)": 20}), {"References": ["DimeRec (ours)"]}, references,
                                  "title")
    anchors = {a.text: a.yanchor for a in figure.layout.annotations if a.text in references}
    assert anchors == {"no-diffusion control": "top", "DimeRec (ours, serve mean)": "top", "MostPopular": "bottom"}


def process_alive(pid: int) -> bool:
    """Running, not a zombie: a killed orphan may wait for a container's init to reap it."""
    fields = stat_fields(pid)  # None: gone
    return fields is not None and fields[0] != "Z"  # proc(5) field 3: the state


def test_a_png_export_that_hangs_is_killed_with_its_browser_and_the_html_stays(tmp_path, monkeypatch, capsys):
    """A kaleido Chromium that hung at start-up stalled a reproduce for 14 minutes (session 38's CI). The stand-in
    browser here starts in a session of its own, as kaleido's does, so killing the export's group would miss it."""
    browser_pid = tmp_path / "browser.pid"
    monkeypatch.setattr(figures, "PNG_EXPORT", (
        "import subprocess, sys, time; "
        "browser = subprocess.Popen(['sleep', '300'], start_new_session=True); "
        f"open({str(browser_pid)!r}, 'w').write(str(browser.pid)); open(sys.argv[1], 'wb').write(b'partial'); "
        "time.sleep(300)"))
    monkeypatch.setattr(figures, "PNG_TIMEOUT_S", 3)
    stem = tmp_path / "figure"
    png = stem.with_suffix(".png")
    started = time.monotonic()
    figures.save(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), stem)
    assert time.monotonic() - started < 60
    assert "plotly" in stem.with_suffix(".html").read_text()
    assert not png.exists()
    assert capsys.readouterr().err == f"warning: {png} not written (the browser did not answer within 3 s)\n"
    pid = int(browser_pid.read_text())
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(pid)


def test_a_png_export_that_fails_says_why_in_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures, "PNG_EXPORT", "import sys; open(sys.argv[1], 'wb').write(b'partial'); "
                                               "raise RuntimeError('Kaleido requires Chrome to be installed')")
    stem = tmp_path / "figure"
    figures.save(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), stem)
    assert stem.with_suffix(".html").is_file() and not stem.with_suffix(".png").exists()
    warning = capsys.readouterr().err
    assert "(RuntimeError: Kaleido requires Chrome to be installed; install Chromium" in warning
    assert warning.count("\n") == 1
