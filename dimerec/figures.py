"""Figures of the reproduction commands: one plotly figure each, saved as interactive HTML and as PNG.

PNG export goes through kaleido, which drives a Chrome/Chromium; without one, or when that browser
does not answer within PNG_TIMEOUT_S, the HTML is still written and a one-line warning says why the
PNG is missing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dimerec.processes import descendants

LOSS_TERMS = ("L_gem", "L_recon", "L_ssm")


PNG_FONT = 16  # px at 1100 px wide: about 14 px where the app shows the PNG (plotly's default 12 read as ~9)
PNG_WIDTH = 1100
TEXT_PX = 960  # of PNG_WIDTH, what a title or a row of panels spans between plotly's margins
CHAR_EM = 0.6  # a character's mean width, in font sizes: how much text fits in TEXT_PX
# A PNG takes 2-4 s on two loaded cores; kaleido's own 90 s limit covers rendering only, not the browser's start-up,
# where a Chromium once hung a reproduce for 14 minutes. The export therefore runs in a child process, killed past
# this limit with everything it started (kaleido's Chromium runs in a session of its own, so a group kill misses it).
PNG_TIMEOUT_S = 120
# The child: read the figure's JSON on stdin, write the PNG to argv[1] at argv[2] × argv[3] px.
PNG_EXPORT = ("import sys, plotly.io as pio; "
              "pio.from_json(sys.stdin.read()).write_image(sys.argv[1], width=int(sys.argv[2]), "
              "height=int(sys.argv[3]), scale=1)")


def save(figure: go.Figure, stem: Path) -> None:
    """`stem`.html (interactive) and `stem`.png (static, its text at PNG_FONT so that it reads on a projector)."""
    figure.write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
    static = go.Figure(figure)  # a copy: the HTML keeps plotly's sizes
    title = static.layout.title.text or ""
    static.update_layout(font=dict(size=PNG_FONT),  # a long title shrinks to fit 1,100 px (titles do not wrap)
                         title_font_size=max(11, min(PNG_FONT + 2, int(TEXT_PX / CHAR_EM / max(len(title), 1)))),
                         legend_font_size=max(static.layout.legend.font.size or 0, 12))
    static.update_annotations(font_size=PNG_FONT)
    png = stem.with_suffix(".png")
    why = write_png(static, png, width=PNG_WIDTH, height=560, timeout_s=PNG_TIMEOUT_S)
    if why:
        print(f"warning: {png} not written ({why})", file=sys.stderr)


def write_png(figure: go.Figure, path: Path, width: int, height: int, timeout_s: float) -> str | None:
    """Write `figure` as a PNG through kaleido in a child process; None when written, else why not (one line).
    A partial file is removed, so a PNG on disk is always a whole one."""
    child = subprocess.Popen([sys.executable, "-c", PNG_EXPORT, str(path), str(width), str(height)],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = child.communicate(figure.to_json(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for pid in [child.pid, *descendants(child.pid)]:  # listed before any dies: orphans lose their parent link
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.wait()  # not communicate(): a survivor holding the stderr pipe would block it
        child.stderr.close()
        path.unlink(missing_ok=True)
        return f"the browser did not answer within {timeout_s:g} s"
    if child.returncode:
        path.unlink(missing_ok=True)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return (f"{lines[-1] if lines else f'exit status {child.returncode}'}; "
                "install Chromium (apt-get install chromium) for PNG export")
    return None


def metric_bars(table: pd.DataFrame, title: str) -> go.Figure:
    """Each row's test HR@50 and NDCG@50 (mean ± std) as horizontal bars, in the table's order from the top: row
    names as long as "GRU4Rec (RecBole's ML-1M settings, batches of 4,096)" read level, written once at the left."""
    figure = model_bars(("HR@50 (%)", "NDCG@50 (%)"), title)
    for col, key in enumerate(("HR@50", "NDCG@50"), start=1):
        add_model_bars(figure, table["model"], table[key], table[f"{key} std"], key, col)
    return figure


def table2_bars(summary: pd.DataFrame, title: str) -> go.Figure:
    figure = model_bars(("linear-probe accuracy (%)", "categories in top 100"), title)
    add_model_bars(figure, summary["model"], summary["probe accuracy"], summary["probe accuracy std"],
                   "probe accuracy", 1)
    figure.add_trace(go.Scatter(x=summary["majority floor"], y=summary["model"], mode="lines",
                                line=dict(dash="dash", color="#333"), name="majority class"), row=1, col=1)
    add_model_bars(figure, summary["model"], summary["categories in top 100"],
                   summary["categories in top 100 std"], "categories in top 100", 2)
    figure.update_layout(legend=dict(orientation="h", x=0, y=-0.12, font=dict(size=PNG_FONT)))
    return figure


def model_bars(panel_titles: tuple[str, str], title: str) -> go.Figure:
    """Two panels of horizontal bars, one a model, sharing the models' axis: the names level, written once at the
    left, the table's first row at the top."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=panel_titles, shared_yaxes=True, horizontal_spacing=0.03)
    figure.update_yaxes(autorange="reversed", automargin=True, ticklabelstandoff=8)
    figure.update_layout(title=title, margin=dict(l=20, r=20))
    return figure


def add_model_bars(figure: go.Figure, models: pd.Series, values: pd.Series, stds: pd.Series, name: str,
                   col: int) -> None:
    figure.add_trace(go.Bar(y=models, x=values, orientation="h", name=name, showlegend=False,
                            error_x=dict(type="data", array=stds),
                            hovertemplate=f"%{{y}}<br>{name} %{{x:.2f}}<extra></extra>"), row=1, col=col)


def loss_curves(curves: dict[str, pd.DataFrame], title: str | None, window: int = 100,
                terms: tuple[str, ...] | list[str] = LOSS_TERMS, dashes: tuple[str, ...] | None = None,
                colors: list[str] | None = None) -> go.Figure:
    """Each loss term over training steps (a rolling mean of `window` steps), one panel per term, one line per
    run (Fig. 4: with and without GRW). `dashes` gives each run a dash style too (the app, for the colour-blind),
    `colors` its colour;
    a run without a term leaves that panel to the others. The one drawing of Fig. 4, for reproduce and the app."""
    figure = make_subplots(rows=1, cols=len(terms), subplot_titles=list(terms), horizontal_spacing=0.06)
    colors = colors or ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # `colors`: one per run, to keep a run's colour
    for i, (label, frame) in enumerate(curves.items()):
        for col, term in enumerate(terms, start=1):
            if term not in frame.columns:
                continue
            smooth = frame[term].rolling(window, min_periods=1).mean()
            line = dict(color=colors[i % len(colors)], **({"dash": dashes[i % len(dashes)]} if dashes else {}))
            figure.add_trace(go.Scatter(x=frame["step"], y=smooth, mode="lines", name=label, legendgroup=label,
                                        showlegend=col == 1 or terms[0] not in frame.columns, line=line,
                                        hovertemplate=f"{label}<br>step %{{x}}: %{{y:.3f}}<extra>{term}</extra>"),
                             row=1, col=col)
    figure.update_xaxes(title_text="training step")
    figure.update_layout(title=title)
    return figure


def step_curves(curve: pd.DataFrame, title: str) -> go.Figure:
    figure = go.Figure()
    for model, frame in curve.groupby("model", sort=False):
        figure.add_trace(go.Scatter(x=frame["step"], y=frame["HR@50 mean"], mode="lines+markers", name=model,
                                    error_y=dict(type="data", array=frame["HR@50 std"]),
                                    customdata=frame["t"], hovertemplate="step %{x} (t = %{customdata}): %{y:.2f}"))
    figure.update_layout(title=title, xaxis_title="reverse step (1 = from x_T)", yaxis_title="HR@50 of x̂0 (%)")
    return figure


OWN_CONTROL_LABEL = "its own control"


def text_px(chars: int) -> float:
    """About how wide `chars` characters print in the PNG, at PNG_FONT."""
    return CHAR_EM * PNG_FONT * chars


def panels_px(panels: int, spacing: float) -> float:
    """About how many PNG pixels `panels` side-by-side panels share, `spacing` (of the figure) between each two."""
    return TEXT_PX * (1 - spacing * (panels - 1))


def panel_widths(panels: int, first_label_chars: int, spacing: float) -> list[float]:
    """Relative widths of `panels` side-by-side panels, the first (which names the references) wide enough for its
    longest label at PNG_FONT: with seven equal panels on ML-1M, "DimeRec (ours, serve mean)" ran across the next
    panel's curves, and wrapped it collided with the label above."""
    first = max(1 / panels, text_px(first_label_chars) / panels_px(panels, spacing))  # of the panels' share
    return [first] + [(1 - first) / (panels - 1)] * (panels - 1) if panels > 1 else [1.0]


def chain_panels(curve: pd.DataFrame, groups: dict[str, list[str]], references: dict[str, float],
                 title: str, default_chain: str | None = None,
                 own_controls: dict[str, float] | None = None) -> go.Figure:
    """One panel per hypothesis: HR@50 of x̂0 (mean over seeds) against the chain's step t, T on the left and
    1 on the right, so partial chains (which start at t* < T) sit where their steps are; the references
    (label -> value) as dotted lines across every panel, and `default_chain`'s curve in grey behind each
    hypothesis's own, so that every lever reads against the chain it changes. `own_controls` (group name -> value):
    a lever trained with a control of its own (H5, H7) has it dashed in its panel, since the references' control
    is not the one it is judged against. Colours restart in each panel, so each legend entry starts with its
    panel's tag ("H1: ...")."""
    def hover(label: str) -> str:
        return f"{label}<br>t = %{{x}}: %{{y:.2f}}<extra></extra>"

    tags = [name.split(":")[0] for name in groups]
    spacing = 0.03
    widths = panel_widths(len(groups), max(map(len, references), default=0), spacing)
    figure = make_subplots(rows=1, cols=len(groups), shared_yaxes=True, horizontal_spacing=spacing,
                           subplot_titles=tags, column_widths=widths)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    default = curve[curve["model"] == default_chain] if default_chain else curve.iloc[:0]
    for col, (tag, (group, labels)) in enumerate(zip(tags, groups.items()), start=1):
        if len(default) and default_chain not in labels:
            # no legendgroup: one would stack plotly's horizontal legend into a single column
            figure.add_trace(go.Scatter(x=default["t"], y=default["HR@50 mean"], mode="lines",
                                        line=dict(color="#aaa", width=3), name=f"{default_chain}, grey",
                                        showlegend=False, hovertemplate=hover(default_chain)), row=1, col=col)
        for j, label in enumerate(labels):
            frame = curve[curve["model"] == label]
            if len(frame):
                figure.add_trace(go.Scatter(x=frame["t"], y=frame["HR@50 mean"], mode="lines+markers",
                                            name=f"{tag}: {label}", line=dict(color=colors[j % len(colors)]),
                                            marker=dict(size=4), hovertemplate=hover(label)), row=1, col=col)
        for label, value in references.items():
            # labels hang under their lines, but the lowest one's would sit on the x-axis ticks ("MostPopular")
            side = "top" if value == min(references.values()) and len(references) > 1 else "bottom"
            labelled = dict(annotation_text=label, annotation_position=f"{side} left") if col == 1 else {}
            figure.add_hline(y=value, line=dict(dash="dot", color="#555"), row=1, col=col, **labelled)
        if own_controls and group in own_controls:
            # named only where the panel holds the words: on planted the narrow H5 and H7 panels ran theirs into
            # each other; the title's "dashed: a lever's own control" names it either way
            named = text_px(len(OWN_CONTROL_LABEL)) <= widths[col - 1] * panels_px(len(groups), spacing)
            figure.add_hline(y=own_controls[group], line=dict(dash="dash", color="#222", width=2), row=1, col=col,
                             **dict(annotation_text=OWN_CONTROL_LABEL, annotation_position="top left") if named else {})
        figure.update_xaxes(autorange="reversed", dtick=10, row=1, col=col)  # few ticks: the panels are narrow
    # plotly's autorange ignores horizontal lines: planted's H7 control (66.3) sat on the panels' top edge
    shown = curve[curve["model"].isin({label for labels in groups.values() for label in labels} | {default_chain})]
    levels = [*shown["HR@50 mean"], *references.values(), *(own_controls or {}).values()]
    if levels:
        pad = 0.06 * (max(levels) - min(levels) or 1)
        figure.update_yaxes(range=[min(levels) - pad, max(levels) + pad])
    figure.update_yaxes(title_text="HR@50 of x̂0 (%, validation)", row=1, col=1)
    figure.add_annotation(text="reverse step t, from T (left) to 1 (right)" + (
        f"; grey: {default_chain}" if len(default) else ""), xref="paper", yref="paper", x=0.5, y=-0.1,
        showarrow=False, yanchor="top")
    figure.update_layout(title=title, margin=dict(b=170),  # the legend under the panels, in as many columns as fit
                         legend=dict(orientation="h", y=-0.2, font=dict(size=10)))
    return figure


def probe_bars(table: pd.DataFrame, title: str) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("linear-probe accuracy (%)", "test HR@50 (%)"))
    figure.add_trace(go.Bar(x=table["model"], y=table["probe accuracy"], showlegend=False,
                            error_y=dict(type="data", array=table["probe accuracy std"])), row=1, col=1)
    figure.add_trace(go.Bar(x=table["model"], y=table["HR@50"], showlegend=False,
                            error_y=dict(type="data", array=table["HR@50 std"])), row=1, col=2)
    figure.update_layout(title=title, margin=dict(b=220))
    return figure
