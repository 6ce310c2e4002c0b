"""Plotly figures of the app. Drawing only: every point they show was computed in `dimerec`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import runs
from dimerec.explore import chain_step, great_circle
from dimerec.figures import loss_curves

# Distinct, colour-blind-friendlier hues first; greys and black are kept for paths and markers.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#393b79", "#f0027f", "#b15928", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d", "#637939", "#8c6d31", "#843c39"]
NO_GRW = "#d62728"  # the no-GRW ablation has this colour in every chart of runs (Training, Steps, their references)
RUN_COLORS = [c for c in PALETTE if c != NO_GRW]
OTHER = "#bbbbbb"
# Heatmaps: Viridis runs from dark to bright yellow, so that small and large weights differ on a washed-out
# projector ("Blues" left most cells near white: attention spreads over 20 items, ~0.05 each)
HEATMAP = "Viridis"
PATH = "#222222"
NEXT = "#ffd400"
SAMPLE_SYMBOLS = "diamond"
SCENE = dict(xaxis=dict(visible=False), yaxis=dict(visible=False), zaxis=dict(visible=False),
             aspectmode="cube", camera=dict(eye=dict(x=1.32, y=1.32, z=0.78)), bgcolor="white",
             domain=dict(x=[0, 0.74], y=[0, 1]))


def run_colors(configs: list[dict]) -> list[str]:
    """A colour per run, in order: the no-GRW ablation always NO_GRW, the others RUN_COLORS in turn."""
    out, j = [], 0
    for config in configs:
        if runs.is_no_grw(config):
            out.append(NO_GRW)
        else:
            out.append(RUN_COLORS[j % len(RUN_COLORS)])
            j += 1
    return out


def colors(run: runs.Run) -> list[str]:
    """One colour per category (most frequent first); categories past the palette share a grey."""
    return [PALETTE[i] if i < len(PALETTE) and name != runs.NO_CATEGORY else OTHER
            for i, name in enumerate(run.categories)]


def color_of(run: runs.Run, item: int) -> str:
    return colors(run)[run.item_category[item]]


@st.cache_data(show_spinner=False, max_entries=8)
def _sphere_traces(run_id: str, stamp: tuple) -> list[dict]:
    """The static part of every sphere: a faint globe and the items, one trace per category."""
    run = runs.load_run(run_id)
    traces = [_globe(0.985)]  # a little inside the items, so that the points are drawn over it
    grid, w = [], np.linspace(0, 2 * np.pi, 73)  # a few parallels and meridians: the eye reads a globe
    for lat in np.radians([-60, -30, 0, 30, 60]):
        grid += [np.stack([np.cos(lat) * np.cos(w), np.cos(lat) * np.sin(w), np.full_like(w, np.sin(lat))], 1)]
    for lon in np.linspace(0, np.pi, 6, endpoint=False):
        grid += [np.stack([np.cos(w) * np.cos(lon), np.cos(w) * np.sin(lon), np.sin(w)], 1)]
    grid = np.concatenate([np.vstack([g, np.full((1, 3), np.nan)]) for g in grid])
    traces.append(dict(type="scatter3d", mode="lines", **_points(grid), line=dict(color="#ccd3dd", width=1),
                       hoverinfo="skip", showlegend=False, name="grid", connectgaps=False))
    palette = colors(run)
    titles = np.array(run.data.titles, dtype=object)
    many = run.data.n_items > 2000
    for c, name in enumerate(run.categories):
        idx = np.flatnonzero(run.item_category == c)
        if not len(idx):
            continue
        p = run.items_3d[idx]
        traces.append(dict(type="scatter3d", mode="markers", x=p[:, 0], y=p[:, 1], z=p[:, 2],
                           name=name, legendgroup="items", legendgrouptitle=dict(text="items by category")
                           if c == 0 else None,
                           marker=dict(size=2 if many else 3, color=palette[c], opacity=0.55),
                           text=titles[idx], hovertemplate="%{text}<extra>" + name + "</extra>"))
    return traces


def _globe(radius: float, n_lon: int = 18, n_lat: int = 9) -> dict:
    """A faint, coarse sphere as a mesh (a latitude-longitude grid of triangles). A mesh3d of ~300 faces redraws
    in about a third of the time of the equivalent surface trace, which matters to the player's frame rate."""
    lon, lat = np.meshgrid(np.linspace(0, 2 * np.pi, n_lon, endpoint=False), np.linspace(-np.pi / 2, np.pi / 2, n_lat))
    points = radius * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1).reshape(-1, 3)
    a = np.arange((n_lat - 1) * n_lon).reshape(n_lat - 1, n_lon)  # vertex (row, column) -> index
    b, c = (a // n_lon) * n_lon + (a + 1) % n_lon, a + n_lon  # right and upper neighbours (longitude wraps)
    d = (c // n_lon) * n_lon + (c + 1) % n_lon
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return dict(type="mesh3d", **_points(points), i=faces[:, 0], j=faces[:, 1], k=faces[:, 2], color="#a9b3c2",
                opacity=0.16, flatshading=False, hoverinfo="skip", name="sphere", showlegend=False,
                lighting=dict(ambient=0.8, diffuse=0.4, specular=0.05))


def _points(p: np.ndarray, radius: float = 1.0) -> dict:
    p = np.asarray(p) * radius
    return dict(x=p[..., 0], y=p[..., 1], z=p[..., 2])


def _arc_path(points: np.ndarray, radius: float) -> np.ndarray:
    """A polyline through consecutive 3-D points along great-circle arcs, scaled to radius: [m, 3]."""
    if len(points) == 1:
        return points * radius
    parts = [great_circle(a, b, 6)[:-1] for a, b in zip(points[:-1], points[1:])] + [points[-1:]]
    return np.concatenate(parts) * radius


ZOOMS = (("−", 1.4), ("1×", 1.0), ("+", 0.7), ("++", 0.5))  # the globe's zoom buttons: camera distance factors


def zoom_buttons(eye: dict | None = None) -> list[dict]:
    """Buttons under a globe that set its zoom (the mouse wheel scrolls the page instead, see ui.CHART_CONFIG);
    each puts the camera at a share of its first distance (`eye`, default SCENE's), looking from there."""
    eye = eye or SCENE["camera"]["eye"]
    buttons = [dict(label=label, method="relayout",
                    args=[{"scene.camera.eye": {k: v * factor for k, v in eye.items()}}]) for label, factor in ZOOMS]
    return [dict(type="buttons", direction="left", buttons=buttons, showactive=False, x=0, xanchor="left", y=0,
                 yanchor="bottom", pad=dict(l=4, b=4), bgcolor="#f7f8fa", bordercolor="#c9ccd3",
                 font=dict(size=13))]


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(scene=SCENE, height=height, updatemenus=zoom_buttons(),
                      margin=dict(l=0, r=0, t=40 if title else 0, b=0),
                      title=dict(text=title, x=0.01, font=dict(size=15)) if title else None,
                      legend=dict(itemsizing="constant", bgcolor="rgba(255,255,255,0.8)", font=dict(size=12),
                                  groupclick="toggleitem", x=0.76, xanchor="left", y=1, yanchor="top"),
                      uirevision="sphere")  # keep the user's rotation when the step changes
    return fig


def interest_marks(run: runs.Run, K: int) -> tuple[str, list[str]]:
    """What the model reads a history as, named for what this model has (DreamRec has no GEM, DiffuRec no
    interests), and the label of each of its K vectors on the globe."""
    name = run.model_name
    if name in ("dimerec", "dimerec-nodiff"):
        return f"GEM interests I1…I{K}", [f"I{k + 1}" for k in range(K)]
    if name == "dreamrec":
        return "guidance c (its SASRec encoder's one vector)", ["c"] * K
    if run.has_diffusion:  # the contract's default: the user vectors, here one served x_0
        return "user vector u (one served x_0)", ["u"] * K
    if K > 1:
        return f"interests I1…I{K}", [f"I{k + 1}" for k in range(K)]
    return "user vector u", ["u"] * K


def sphere_figure(run: runs.Run, view: runs.UserView, next_item: int | None, step: int | None,
                  title: str | None = None, height: int = 640, show_interests: bool = True) -> go.Figure:
    """Items on the sphere, the user's history, K interests, and the S reverse samples after `step` steps."""
    traces = list(_sphere_traces(run.id, run.stamp))
    if len(view.hist):
        p = run.items_3d[view.hist]
        traces.append(dict(type="scatter3d", mode="markers", name="history items", legendgroup="user",
                           legendgrouptitle=dict(text="this user"), **_points(p, 1.01),
                           marker=dict(size=6, color="rgba(0,0,0,0)", line=dict(color=PATH, width=2)),
                           text=[run.title(i) for i in view.hist],
                           hovertemplate="history: %{text}<extra></extra>"))
    if show_interests:
        K = len(view.interests_3d)
        name, labels = interest_marks(run, K)
        traces.append(dict(type="scatter3d", mode="markers+text", name=name.replace(f"I1…I{K}", f"(K={K})"),
                           legendgroup="user", **_points(view.interests_3d, 1.04),
                           marker=dict(size=7, symbol="square", color="#555555", line=dict(color="white", width=1)),
                           text=labels, textposition="top center", textfont=dict(size=12, color="#333333"),
                           hovertemplate=f"{name.split(' I1')[0]}: %{{text}}<extra></extra>"))
    if next_item is not None:
        traces.append(dict(type="scatter3d", mode="markers+text", name="true next item", legendgroup="user",
                           **_points(run.items_3d[[next_item]], 1.05),
                           marker=dict(size=9, symbol="diamond", color=NEXT, line=dict(color=PATH, width=2)),
                           text=["next"], textposition="bottom center", textfont=dict(size=12, color=PATH),
                           hovertext=[f"true next item: {run.title(next_item)}"], hoverinfo="text"))
    if view.samples is not None and step is not None:
        traces += _sample_traces(run, view, step)
    return _layout(go.Figure(data=traces), height, title)


MAX_FRAMES = 41  # DreamRec's 200 steps as 201 frames would be ~20 MB of paths; 41 keep every 5th


def frame_steps(T: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """The reverse steps the player shows: all of 0..T when they are few, else evenly spaced ones, 0 and T kept."""
    if T + 1 <= max_frames:
        return list(range(T + 1))
    return sorted({int(round(k)) for k in np.linspace(0, T, max_frames)})


def sphere_frames(run: runs.Run, view: runs.UserView, next_item: int, projector: bool = False,
                  height: int = 500) -> tuple[go.Figure, list[dict]]:
    """The sphere at step 0 and one Plotly frame per shown reverse step (`frame_steps`), each carrying only the
    sample traces (the items, history and interests stay put, and so does the user's rotation). The globe takes
    the figure's whole width."""
    fig = sphere_figure(run, view, next_item, 0, height=height)
    dynamic = list(range(len(fig.data) - 4, len(fig.data)))  # _sample_traces' four traces come last
    shown = frame_steps(view.samples.T)
    frames = [dict(name=str(k), traces=dynamic, data=_sample_traces(run, view, k, through=shown)) for k in shown]
    for trace in (t for frame in frames if projector for t in frame["data"] if "textfont" in t):
        trace["textfont"] = {**trace["textfont"], "size": PROJECTOR_FONT - 2}  # the s1..s6 labels, as projector_fonts
    # the player writes its own key beside the globe (a Plotly legend would take a third of the globe's room)
    fig.update_layout(scene=dict(domain=dict(x=[0, 1], y=[0, 1]), camera=dict(eye=dict(x=1.0, y=1.0, z=0.6))),
                      margin=dict(l=0, r=0, t=0, b=0), showlegend=False)
    fig.layout.updatemenus = ()  # the player has its own zoom buttons, beside Play
    return (projector_fonts(fig) if projector else fig), _plain(frames)


def _plain(value):
    """NumPy arrays in nested dicts/lists as lists, NaN as null (frames go to the browser as JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":  # 4 decimals: a hundredth of a pixel, half the bytes
        rounded = np.round(value, 4).astype(object)
        rounded[np.isnan(value)] = None
        return rounded.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


PROJECTOR_FONT = 17  # px: readable from the back of a room on a 1280x800 projector


def projector_fonts(fig: go.Figure, size: int = PROJECTOR_FONT) -> go.Figure:
    """Every text of a figure at least `size` px: ticks, legend, titles, annotations and trace labels."""
    fig.update_layout(font=dict(size=size), legend=dict(font=dict(size=size)),
                      title=dict(font=dict(size=size + 2)) if fig.layout.title.text else None)
    fig.update_annotations(font_size=size)
    fig.update_xaxes(tickfont_size=size, title_font_size=size)
    fig.update_yaxes(tickfont_size=size, title_font_size=size)
    for trace in fig.data:
        if "textfont" in trace:
            trace.textfont.size = max(size - 2, trace.textfont.size or 0)
    return fig


def _sample_traces(run: runs.Run, view: runs.UserView, step: int, through: list[int] | None = None) -> list[dict]:
    """The S samples after `step` steps; their paths pass through the states `through` (default: every step)."""
    S = view.samples_3d.shape[1]
    # A Euclidean chain (DreamRec, DiffuRec) is not on the sphere: x_t starts as Gaussian noise and has a length.
    # Its direction is what ranks items, so the globe shows where x_t points, as dots, and draws no path: joined
    # across the globe, the jumps of its direction over 200 noisy steps were a tangle that said nothing.
    euclidean = run.model.chain_space == "euclidean"
    states = view.samples_3d[:step + 1] if through is None else view.samples_3d[[k for k in through if k <= step]]
    paths = []
    for s in range(S if not euclidean else 0):
        paths.append(_arc_path(states[:, s], 1.02))
        paths.append(np.full((1, 3), np.nan))  # a break between samples in one trace
    path = np.concatenate(paths) if paths else np.full((1, 3), np.nan)
    now = view.samples_3d[step]
    guess = view.recommend_3d[step]
    first = view.samples.sample_top[step, :, 0]
    hover = [f"sample {s + 1}: nearest item {run.title(first[s])} ({run.category(first[s])})" for s in range(S)]
    t = view.samples.T - step
    where = "direction of " if euclidean else ""
    return [
        dict(type="scatter3d", mode="lines", name="paths x_T → x_t", legendgroup="samples",
             legendgrouptitle=dict(text=f"{S} reverse samples"), **_points(path),
             line=dict(color=PATH, width=4), hoverinfo="skip", connectgaps=False, showlegend=not euclidean),
        dict(type="scatter3d", mode="markers", name=f"{where}start x_T (noise)", legendgroup="samples",
             **_points(view.samples_3d[0], 1.02), marker=dict(size=4, color="#888888", symbol="circle"),
             hoverinfo="skip"),
        dict(type="scatter3d", mode="markers+text", name=f"{where}x_t now (t = {t})", legendgroup="samples",
             **_points(now, 1.03), text=[f"s{s + 1}" for s in range(S)], textposition="middle right",
             textfont=dict(size=11, color=PATH),
             marker=dict(size=8, symbol=SAMPLE_SYMBOLS, color=[color_of(run, i) for i in first],
                         line=dict(color=PATH, width=2)),
             hovertext=hover, hoverinfo="text"),
        dict(type="scatter3d", mode="markers", name="x̂0 guess from x_t", legendgroup="samples",
             **_points(guess, 1.03), marker=dict(size=5, symbol="circle-open", color=PATH),
             hovertext=[f"sample {s + 1}: the denoiser's guess of x_0" for s in range(S)], hoverinfo="text",
             visible="legendonly"),
    ]


def forward_figure(run: runs.Run, paths_3d: np.ndarray, next_item: int, t: int, height: int = 520) -> go.Figure:
    """The forward noise of one item: n noise draws, each seen at steps 0..t."""
    traces = list(_sphere_traces(run.id, run.stamp))
    n = paths_3d.shape[1]
    parts = []
    for j in range(n):
        parts += [_arc_path(paths_3d[:t + 1, j], 1.02), np.full((1, 3), np.nan)]
    where = "direction of " if run.model.chain_space == "euclidean" else ""  # off the sphere: its direction
    traces.append(dict(type="scatter3d", mode="lines", name=f"noise paths x_0 → {where}x_t",
                       **_points(np.concatenate(parts)), line=dict(color=PATH, width=4), hoverinfo="skip",
                       connectgaps=False))
    traces.append(dict(type="scatter3d", mode="markers", name=f"{where}x_t at t = {t}", **_points(paths_3d[t], 1.03),
                       marker=dict(size=6, color=PATH, symbol="diamond"), hoverinfo="skip"))
    traces.append(dict(type="scatter3d", mode="markers+text", name="x_0: the true next item",
                       **_points(run.items_3d[[next_item]], 1.05), text=["x_0"], textposition="bottom center",
                       marker=dict(size=9, symbol="diamond", color=NEXT, line=dict(color=PATH, width=2)),
                       hovertext=[run.title(next_item)], hoverinfo="text"))
    fig = _layout(go.Figure(data=traces), height)
    # the globe takes the whole width: the categories are not the point here (hover names them), the three marks
    # are named in one row above it
    fig.update_traces(showlegend=False, selector=dict(legendgroup="items"))
    eye = dict(x=1.0, y=1.0, z=0.6)  # nearer than SCENE's: the globe fills its column, as in the player
    fig.update_layout(scene=dict(domain=dict(x=[0, 1], y=[0, 0.93]), camera=dict(eye=eye)),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="top"))
    fig.layout.updatemenus = zoom_buttons(eye)
    return fig


def rank_figure(ranks: np.ndarray, height: int = 170, projector: bool = False) -> go.Figure:
    """Along the reverse process (step 0 = x_T ... T = x_0): the true next item's rank in the merged top 50."""
    steps = np.arange(len(ranks))
    fig = go.Figure(go.Scatter(x=steps, y=ranks, mode="lines+markers", line=dict(color=PATH), showlegend=False,
                               hovertemplate="step %{x}: rank %{y}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=None, range=[-0.5, len(ranks) - 0.5])
    fig.update_layout(height=height, margin=dict(l=44, r=10, t=30, b=28), font=dict(size=12),
                      title=dict(text="rank of the true next item", x=0.02, font=dict(size=13)))
    return projector_fonts(fig) if projector else fig


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def angle_figure(angles: np.ndarray, height: int = 240, projector: bool = False,
                 lands: list[tuple[str, str]] | None = None) -> go.Figure:
    """Along the reverse process: the angle of each sample's x_t [T+1, S] to the true next item, in degrees.
    `lands`: for each sample, the category its x_0's nearest item falls in and that category's colour, so that a
    line has its sample's colour on the sphere at step T; samples landing alike differ by their dash."""
    steps = np.arange(len(angles))
    S = angles.shape[1]
    lands = lands or [(None, PALETTE[s % len(PALETTE)]) for s in range(S)]
    seen: dict[str, int] = {}
    traces = []
    for s, (category, color) in enumerate(lands):
        dash = DASHES[seen.get(color, 0) % len(DASHES)]
        seen[color] = seen.get(color, 0) + 1
        name = f"s{s + 1} → {_short(category, 16)}" if category else f"s{s + 1}"
        traces.append(go.Scatter(x=steps, y=angles[:, s], mode="lines", name=name,
                                 line=dict(width=2.5, color=color, dash=dash),
                                 hovertemplate=f"s{s + 1}, step %{{x}}: %{{y:.0f}}°<extra></extra>"))
    fig = go.Figure(traces)
    fig.add_hline(y=90, line=dict(dash="dot", color="#888", width=1))
    fig.update_xaxes(title="reverse step", range=[-0.5, len(angles) - 0.5])
    fig.update_yaxes(title="angle (°)")
    fig.update_layout(height=height, margin=dict(l=60, r=10, t=34, b=44), font=dict(size=12),
                      title=dict(text="angle of each sample's x_t to the true next item", x=0.01, font=dict(size=13)),
                      legend=dict(x=1.01, xanchor="left", y=1, yanchor="top", tracegroupgap=0))
    return projector_fonts(fig) if projector else fig


def attention_figure(run: runs.Run, hist: np.ndarray, attention: np.ndarray,
                     truth: list[str] | None = None, height: int | None = None) -> go.Figure:
    """GEM attention: which history items (rows, oldest at the top) each interest (column) reads."""
    n, K = attention.shape
    labels = []
    for pos, item in enumerate(hist):
        tail = "  [noise]" if truth is not None and truth[pos] else ""
        chip = f"<span style='color:{color_of(run, item)}'>■</span>"
        labels.append(f"{pos + 1:>2}. {chip} {_short(run.title(item), 34)}{tail}")
    # columns named I1..I4 as on the sphere: "interest 1" headers overlapped at 1280 px
    fig = go.Figure(go.Heatmap(z=attention, x=[f"I{k + 1}" for k in range(K)], y=labels,
                               colorscale=HEATMAP, zmin=0, zmax=float(max(attention.max(), 1e-6)),
                               colorbar=dict(title="attention", thickness=12),
                               customdata=np.array([[run.category(i)] * K for i in hist]),
                               hovertemplate="%{y}<br>%{x}: %{z:.2f}<br>category %{customdata}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=12))
    fig.update_xaxes(tickangle=0, side="top", title=dict(text="interest", standoff=4))
    fig.update_layout(height=height or max(300, 26 * n + 80), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def _short(title: str, n: int = 42) -> str:
    return title if len(title) <= n else title[:n - 1] + "…"


def category_mix_figure(run: runs.Run, top: np.ndarray, height: int | None = None) -> go.Figure:
    """Share of each category among each interest's nearest items: one stacked bar per interest."""
    K, n = top.shape
    palette = colors(run)
    fig = go.Figure()
    cats = run.item_category[top]  # [K, n]
    present = [c for c in range(len(run.categories)) if (cats == c).any()]
    for c in present:
        share = (cats == c).mean(axis=1)
        fig.add_trace(go.Bar(y=[f"I{k + 1}" for k in range(K)], x=share, orientation="h",
                             name=run.categories[c], marker_color=palette[c],
                             hovertemplate=f"{run.categories[c]}: %{{x:.0%}}<extra></extra>"))
    # the legend sits below the axis title, in a margin sized for two entries a row (a narrow column's share): in
    # paper units its place depended on the bars' height, and with one interest (DreamRec) it covered the axis title
    rows, plot, axis = -(-len(present) // 2), 40 * K + 30, 55
    bottom = axis + 22 * rows
    fig.update_layout(barmode="stack", height=height or plot + 10 + bottom, margin=dict(l=10, r=10, t=10, b=bottom),
                      xaxis=dict(tickformat=".0%", range=[0, 1], title=f"share of the {n} nearest items"),
                      yaxis=dict(autorange="reversed"),
                      legend=dict(orientation="h", yanchor="top", y=-axis / plot, x=0, traceorder="normal"))
    return fig


def history_figure(run: runs.Run, hist: np.ndarray, next_item: int, height: int = 300) -> go.Figure:
    """A user's history as a timeline, one row per category, with the next item to guess at the end."""
    palette = colors(run)
    shown = sorted({run.item_category[i] for i in hist} | {run.item_category[next_item]})
    fig = go.Figure()
    for c in shown:
        pos = [p + 1 for p, i in enumerate(hist) if run.item_category[i] == c]
        fig.add_trace(go.Scatter(x=pos, y=[run.categories[c]] * len(pos), mode="markers", name=run.categories[c],
                                 marker=dict(size=14, color=palette[c], line=dict(color="white", width=1)),
                                 text=[run.title(hist[p - 1]) for p in pos],
                                 hovertemplate="%{x}. %{text}<extra></extra>", showlegend=False))
    fig.add_trace(go.Scatter(x=[len(hist) + 1], y=[run.category(next_item)], mode="markers+text",
                             name="next item (to predict)", text=["?"], textposition="middle right",
                             textfont=dict(size=18), marker=dict(size=18, symbol="star", color=NEXT,
                                                                 line=dict(color=PATH, width=1.5)),
                             hovertext=[f"the true next item: {run.title(next_item)}"], hoverinfo="text"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), showlegend=False,
                      xaxis=dict(title="position in the history (oldest → newest, then the next item)", dtick=1),
                      yaxis=dict(categoryorder="array", categoryarray=[run.categories[c] for c in shown]))
    return fig


def loss_figure(frames: dict[str, pd.DataFrame], terms: list[str], window: int, height: int = 380,
                colors: list[str] | None = None) -> go.Figure:
    """Each loss term over training steps, one panel per term, one line per run: Fig. 4's drawing
    (`dimerec.figures.loss_curves`), laid out for the page."""
    fig = loss_curves(frames, None, window, terms, dashes=("solid", "dash", "dot", "dashdot"), colors=colors)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    return fig


def steps_figure(curves: dict[str, dict], metric: str, height: int = 400,
                 references: dict[str, float] | None = None, colors: list[str] | None = None) -> go.Figure:
    """A metric of the intermediate x̂0 at every reverse step, one line per run; the final x_0 as a marker;
    `references` (label -> value) as dotted horizontal lines. Runs whose chains differ in length (DimeRec's 20
    steps, DreamRec's 200) share an axis of step / T, the share of the chain done; the hover keeps the step."""
    fig = go.Figure()
    references = references or {}
    values = [v for sm in curves.values() for v in [s[metric] for s in sm["steps"]]
              + [(sm.get("final") or {}).get(metric)] if v is not None] + list(references.values())
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.03, 0.06 * (high - low))
    # the references' labels sit in the right margin, beside their lines, where no curve can run under them;
    # nudged apart where two levels are close (two lines of projector-size text: about a fifth of the axis)
    placed = spread_labels(references, gap=0.2 * (high - low + 2 * pad), top=high + pad)
    for label, value in references.items():
        color = NO_GRW if label == "no GRW" else "#666"
        fig.add_hline(y=value, line=dict(dash="dot", color=color, width=2))
        fig.add_annotation(x=1, xref="paper", xanchor="left", y=placed[label], yref="y", yanchor="middle",
                           text=f"{label}<br>{value:.1%}", showarrow=False, align="left", font=dict(color=color))
    lengths = {int(sm.get("T") or len(sm["steps"])) for sm in curves.values()}
    share = len(lengths) > 1
    for j, (label, sm) in enumerate(curves.items()):
        steps = sm["steps"]
        T = int(sm.get("T") or len(steps))
        color = colors[j] if colors else PALETTE[j % len(PALETTE)]
        numbers = np.array([chain_step(s["t"], T) for s in steps])
        fig.add_trace(go.Scatter(x=numbers / T if share else numbers, y=[s[metric] for s in steps],
                                 mode="lines+markers", marker=dict(size=4 if T > 50 else 6),
                                 name=label, line=dict(color=color, width=2), legendgroup=label,
                                 customdata=np.stack([numbers, [s["t"] for s in steps]], -1),
                                 hovertemplate=f"{label}<br>step %{{customdata[0]}} of {T} (x̂0 from t = "
                                               f"%{{customdata[1]}}): %{{y:.1%}}<extra>{metric}</extra>"))
        final = (sm.get("final") or {}).get(metric)
        if final is not None:
            fig.add_trace(go.Scatter(x=[1 if share else T], y=[final], mode="markers", legendgroup=label,
                                     name=f"{label}: final x_0", showlegend=False,
                                     marker=dict(symbol="star", size=13, color=color, line=dict(color=PATH, width=1)),
                                     hovertemplate=f"{label}<br>final x_0 (step {T}): %{{y:.1%}}"
                                                   f"<extra>{metric}</extra>"))
    axis = ("share of the reverse chain done, step / T (0 = the guess from pure noise x_T; ★ = the served x_0)"
            if share else "reverse step (0 = the guess from pure noise x_T; ★ = the served x_0)")
    fig.update_layout(height=height, margin=dict(l=10, r=200 if references else 10, t=10, b=10),
                      xaxis=dict(title=axis),
                      yaxis=dict(title=f"{metric} of x̂0 (validation)", tickformat=".0%", range=[low - pad, high + pad]),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


def spread_labels(levels: dict[str, float], gap: float, top: float) -> dict[str, float]:
    """Where to write each level's label: at its level, moved up just enough to keep `gap` from the one below it,
    and the whole stack moved down where that would pass `top`."""
    placed, below = {}, -np.inf
    for label, value in sorted(levels.items(), key=lambda item: item[1]):
        placed[label] = below = max(value, below + gap)
    overshoot = max(placed.values(), default=top) - top
    return {label: y - max(overshoot, 0) for label, y in placed.items()}


def lesson_figure(scores: dict, chosen: int, references: dict[str, float] | None = None, metric: str = "HR@50",
                  height: int = 300) -> go.Figure:
    """The lesson's curve: `metric` of the mixture of S chains against S (log axis; S = 1 is the chain as served),
    the one-step mean as a dashed line, `references` (label -> value) dotted, the chosen S ringed."""
    counts = [int(s) for s in scores["mixture"]]
    values = [scores["mixture"][str(s)][metric] for s in counts]
    fig = go.Figure()
    for label, value in (references or {}).items():
        fig.add_hline(y=value, line=dict(dash="dot", color="#666", width=2), annotation_text=f"{label} {value:.1%}",
                      annotation_position="bottom right")
    mean = scores["mean"][metric]
    fig.add_hline(y=mean, line=dict(dash="dash", color=PALETTE[2], width=3),
                  annotation_text=f"one-step mean x̂0 {mean:.1%}", annotation_position="top left")
    fig.add_trace(go.Scatter(x=counts, y=values, mode="lines+markers", name="mixture of S samples",
                             line=dict(color=PALETTE[0], width=3), marker=dict(size=9),
                             hovertemplate="S = %{x}: %{y:.1%}<extra>mixture</extra>"))
    at = counts.index(chosen) if chosen in counts else 0
    fig.add_trace(go.Scatter(x=[counts[at]], y=[values[at]], mode="markers", showlegend=False,
                             marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(color=PATH, width=3)),
                             hoverinfo="skip"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), showlegend=False,
                      xaxis=dict(title="S, the samples whose mixture ranks (1 = one chain, as served)", type="log",
                                 tickvals=counts, ticktext=[str(s) for s in counts]),
                      yaxis=dict(title=f"{metric} (validation)", tickformat=".0%"))
    return fig


def oracle_figure(oracle: dict, height: int = 240) -> go.Figure:
    """Notebook 02's oracle that knows only the odds, as hit rates of a one-item list: ranked by the mean (the most
    likely item first) and by the most frequent of S samples."""
    counts = list(oracle["samples"])
    odds = " / ".join(f"{p:.0%}" for p in oracle["odds"])
    fig = go.Figure(go.Bar(x=[f"S = {s}" for s in counts], y=[oracle["samples"][s] for s in counts],
                           marker_color=PALETTE[0], name="the most frequent of S samples",
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.add_hline(y=oracle["mean"], line=dict(dash="dash", color=PALETTE[2], width=3),
                  annotation_text=f"the mean: the likeliest item, {oracle['mean']:.0%}", annotation_position="top left")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), showlegend=False,
                      title=dict(text=f"Odds {odds}: how often is a one-item list right?", font=dict(size=15)),
                      yaxis=dict(range=[0, 0.6], tickformat=".0%", title="right"))
    return fig


MAP_FONT = 16  # px: the item map is read on a 1280x800 projector, projector mode or not


def item_map_figure(run: runs.Run, view: runs.UserView, where: runs.MapView, next_item: int,
                    height: int = 560) -> go.Figure:
    """The item map (UMAP, 2-D): items by category, the history, the interests and the chain's x̂0 guesses at a few
    steps, light (step 0, the guess from pure noise) to dark (x_0), and the true next item. x_T is not drawn."""
    palette = colors(run)
    items = where.items_2d
    scatter = go.Scattergl if run.data.n_items > 3000 else go.Scatter
    titles = np.array(run.data.titles, dtype=object)
    fig = go.Figure()
    labels = []  # each category named on the map, at the middle of its items (a legend of 12 would crowd it)
    # a category is named only where its items gather: most of their 10 nearest items on the map share it (a barely
    # trained run mixes them, and twelve names piled up in the middle of the map)
    distance = ((items[:, None] - items[None]) ** 2).sum(-1) if len(items) <= 3000 else None
    if distance is not None:
        np.fill_diagonal(distance, np.inf)
        near = np.argpartition(distance, 10, axis=1)[:, :10]
        alike = (run.item_category[near] == run.item_category[:, None]).mean(axis=1)  # [n_items]
    for c, name in enumerate(run.categories):
        idx = np.flatnonzero(run.item_category == c)
        if len(idx):
            fig.add_trace(scatter(x=items[idx, 0], y=items[idx, 1], mode="markers", name=name, legendgroup="items",
                                  showlegend=False, marker=dict(size=8, color=palette[c], opacity=0.5),
                                  text=titles[idx], hovertemplate="%{text}<extra>" + name + "</extra>"))
            middle = items[idx[np.argmin(((items[idx] - np.median(items[idx], axis=0)) ** 2).sum(1))]]
            gathered = distance is not None and alike[idx].mean() >= 0.5
            if c < len(PALETTE) and name != runs.NO_CATEGORY and gathered:  # at the item nearest their middle
                labels.append((name, *middle, palette[c]))
    if not labels:
        fig.add_annotation(x=0, y=0, xref="paper", yref="paper", xanchor="left", yanchor="bottom", showarrow=False,
                           text="The categories are mixed on this map:<br>this run's item vectors do not keep them "
                                "apart.", align="left", font=dict(size=MAP_FONT - 2, color="#555"),
                           bgcolor="rgba(255,255,255,0.8)")
    for name, x, y, color in labels:
        fig.add_annotation(x=x, y=y, text=f"<b>{name}</b>", showarrow=False, yshift=-16,
                           font=dict(size=MAP_FONT - 2, color=color), bgcolor="rgba(255,255,255,0.6)")
    hist = items[view.hist]
    fig.add_trace(go.Scatter(x=hist[:, 0], y=hist[:, 1], mode="markers", name="history items", legendgroup="user",
                             marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(color=PATH, width=2)),
                             text=[run.title(i) for i in view.hist], hovertemplate="history: %{text}<extra></extra>"))
    name, labels = interest_marks(run, len(where.interests_2d))
    fig.add_trace(go.Scatter(x=where.interests_2d[:, 0], y=where.interests_2d[:, 1], mode="markers+text", name=name,
                             legendgroup="user", text=labels, textposition="top center",
                             textfont=dict(size=MAP_FONT, color="#222"),
                             marker=dict(size=13, symbol="square", color="#555555", line=dict(color="white", width=1)),
                             hovertemplate="%{text}<extra></extra>"))
    if where.guesses_2d is not None:
        n = len(where.steps)
        for j, (k, points) in enumerate(zip(where.steps, where.guesses_2d)):
            last = j == n - 1
            shade = int(round(200 - 200 * j / max(n - 1, 1)))  # light grey at step 0 to black at step T
            label = ("x_0 (step T, served)" if last else
                     "x̂0 at step 0 (from pure noise)" if k == 0 else f"x̂0 at step {k}")
            fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=label, legendgroup="chain",
                                     marker=dict(size=13 if last else 10, symbol="diamond" if last else "circle",
                                                 color=f"rgb({shade},{shade},{shade})",
                                                 line=dict(color="white", width=1)),
                                     hovertemplate=f"{label}, sample %{{pointNumber}}<extra></extra>"))
    nxt = items[[next_item]]
    fig.add_trace(go.Scatter(x=nxt[:, 0], y=nxt[:, 1], mode="markers", name="true next item", legendgroup="user",
                             marker=dict(size=18, symbol="star", color=NEXT, line=dict(color=PATH, width=1.5)),
                             hovertext=[f"true next item: {run.title(next_item)}"], hoverinfo="text"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)  # not to scale: UMAP's axes mean nothing, its distances only between neighbours
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), font=dict(size=MAP_FONT),
                      plot_bgcolor="white", legend=dict(font=dict(size=MAP_FONT), itemsizing="constant",
                                                        groupclick="toggleitem", tracegroupgap=8))
    return fig
