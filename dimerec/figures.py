"""Figures of the reproduction commands: one plotly figure each, saved as interactive HTML and as PNG.

PNG export goes through kaleido, which drives a Chrome/Chromium; without one the HTML is
still written and a one-line warning says why the PNG is missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LOSS_TERMS = ("L_gem", "L_recon", "L_ssm")


def save(figure: go.Figure, stem: Path) -> None:
    figure.write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
    try:
        figure.write_image(stem.with_suffix(".png"), width=1100, height=500, scale=1)
    except Exception as err:  # kaleido raises several kinds when no browser is found
        print(f"warning: {stem.with_suffix('.png')} not written ({type(err).__name__}: {err}); "
              f"install Chromium (apt-get install chromium) for PNG export", file=sys.stderr)


def metric_bars(table: pd.DataFrame, title: str) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("HR@50 (%)", "NDCG@50 (%)"))
    for col, key in enumerate(("HR@50", "NDCG@50"), start=1):
        figure.add_trace(go.Bar(x=table["model"], y=table[key], error_y=dict(type="data", array=table[f"{key} std"]),
                                name=key, showlegend=False), row=1, col=col)
    figure.update_layout(title=title, margin=dict(b=140))
    return figure


def table2_bars(summary: pd.DataFrame, title: str) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("linear-probe accuracy (%)", "categories in top 100"))
    figure.add_trace(go.Bar(x=summary["model"], y=summary["probe accuracy"], showlegend=False,
                            error_y=dict(type="data", array=summary["probe accuracy std"])), row=1, col=1)
    figure.add_trace(go.Scatter(x=summary["model"], y=summary["majority floor"], mode="lines",
                                line=dict(dash="dash", color="grey"), name="majority class"), row=1, col=1)
    figure.add_trace(go.Bar(x=summary["model"], y=summary["categories in top 100"], showlegend=False,
                            error_y=dict(type="data", array=summary["categories in top 100 std"])), row=1, col=2)
    figure.update_layout(title=title, margin=dict(b=140))
    return figure


def loss_curves(curves: dict[str, pd.DataFrame], title: str, window: int = 100) -> go.Figure:
    figure = make_subplots(rows=1, cols=len(LOSS_TERMS), subplot_titles=LOSS_TERMS)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for i, (label, frame) in enumerate(curves.items()):
        for col, term in enumerate(LOSS_TERMS, start=1):
            smooth = frame[term].rolling(window, min_periods=1).mean()
            figure.add_trace(go.Scatter(x=frame["step"], y=smooth, mode="lines", name=label, legendgroup=label,
                                        showlegend=col == 1, line=dict(color=colors[i % len(colors)])),
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


def probe_bars(table: pd.DataFrame, title: str) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("linear-probe accuracy (%)", "test HR@50 (%)"))
    figure.add_trace(go.Bar(x=table["model"], y=table["probe accuracy"], showlegend=False,
                            error_y=dict(type="data", array=table["probe accuracy std"])), row=1, col=1)
    figure.add_trace(go.Bar(x=table["model"], y=table["HR@50"], showlegend=False,
                            error_y=dict(type="data", array=table["HR@50 std"])), row=1, col=2)
    figure.update_layout(title=title, margin=dict(b=220))
    return figure
