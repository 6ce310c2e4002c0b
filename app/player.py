"""The Denoising page's player: a reverse run sent once as Plotly frames, played in the browser.

Play, pause and the step slider live in the component (`app/player/player.js`), so playing costs no
server round trip; the step comes back to the app only when it stops moving, and every view of the
player (slider, heading, table, sphere, rank chart) is drawn from that one value. Presentation only.
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import plotly
import streamlit as st
import streamlit.components.v1 as components

from app import figures, runs, ui
from dimerec import explore

SOURCE = Path(__file__).resolve().parent / "player"
ASSETS = ("index.html", "player.js", "player.css")
FPS = 6  # frames per second while playing: slow enough to narrate, fast enough to see the walk


# plotly.js's official gl3d partial bundle (npm plotly.js-gl3d-dist-min, MIT, app/player/plotly-LICENSE): the
# traces the player draws (scatter3d, mesh3d, scatter) in 1.8 MB instead of the full bundle's 4.8 MB, so the browser
# parses it about a second sooner (Denoising's cold load, issue 30). Used only where its version is the one the
# installed plotly package ships (requirements.txt pins it); else the full bundle.
PARTIAL_BUNDLE = SOURCE / "plotly-gl3d.min.js"


def _bundle_version(path: Path) -> str | None:
    with path.open("rb") as file:  # the version is in the banner: no need to read megabytes
        banner = file.read(400)
    found = re.search(rb"plotly\.js[^\n]*? v(\d+\.\d+\.\d+)", banner)
    return found.group(1).decode() if found else None


def plotly_bundle() -> Path:
    """The plotly.js the player loads: the partial bundle when it matches the installed plotly's own, else that."""
    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    same = PARTIAL_BUNDLE.exists() and _bundle_version(PARTIAL_BUNDLE) == _bundle_version(full)
    return PARTIAL_BUNDLE if same else full


def _asset_dir() -> Path:
    """The component's files beside plotly.js (`plotly_bundle`; the browser has no network to fetch it from), in
    a folder named by their content so that an edit never meets a stale copy."""
    plotly_js = plotly_bundle()
    digest = hashlib.sha1(f"{plotly.__version__} {plotly_js.name}".encode())
    for name in ASSETS:
        digest.update((SOURCE / name).read_bytes())
    folder = Path(tempfile.gettempdir()) / f"dimerec-player-{digest.hexdigest()[:12]}"
    if not (folder / "plotly.min.js").exists():
        staging = Path(tempfile.mkdtemp(prefix="dimerec-player-"))
        for name in ASSETS:
            shutil.copy(SOURCE / name, staging / name)
        shutil.copy(plotly_js, staging / "plotly.min.js")
        try:
            staging.rename(folder)  # atomic: two sessions starting at once both end with a whole folder
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@functools.cache
def _component():
    """The component, declared on first use (declaring it copies plotly.js once: not at import time)."""
    return components.declare_component("dimerec_player", path=str(_asset_dir()))


def _step_texts(run: runs.Run, view: runs.UserView, next_item: int, ranks: np.ndarray) -> list[dict]:
    """What the player writes at each step k = 0..T (x_T is step 0, x_0 is step T; see the glossary)."""
    T = view.samples.T
    S = view.samples_3d.shape[1]
    title = f"<i>{html.escape(run.title(next_item))}</i> ({html.escape(run.category(next_item))})"
    texts = []
    # a Euclidean chain's x_t has a length the globe cannot show (it shows the direction): said in the heading
    lengths = (np.linalg.norm(view.samples.x_t, axis=-1).mean(axis=1) if run.model.chain_space == "euclidean"
               else None)  # [T+1] mean over the samples
    for k in figures.frame_steps(T):
        t = T - k
        stage = "pure noise" if k == 0 else ("the final x_0" if k == T else "partly denoised")
        if lengths is not None:
            stage += f"; length ‖x_t‖ ≈ {lengths[k]:.1f}, the globe shows its direction"
        what = "x_0 itself" if k == T else f"x̂0, the denoiser's guess of x_0 from x_t at t = {t}"
        rank = ranks[k]
        rank_line = (f"The true next item, {title}, is <b>not in the top 50</b> at this step." if np.isnan(rank) else
                     f"The true next item, {title}, is <b>#{int(rank)}</b> of the top 50 at this step.")
        first = view.samples.sample_top[k, :, 0]
        chips = " · ".join(f"s{s + 1} → " + ui.category_chip(html.escape(run.category(i)), figures.color_of(run, i))
                           for s, i in enumerate(first))
        texts.append(dict(
            step=k, heading=f"After {k} of {T} reverse steps — x_t at t = {t} ({stage})",
            rank_line=f"Nearest items to {what}, best over the {S} samples. {rank_line}",
            items=[dict(rank=r + 1, title=run.short_title(i), category=run.categories_of(i),
                        color=figures.color_of(run, i), next=bool(i == next_item))
                   for r, i in enumerate(view.samples.top[k][:10])],
            chips=f"Where each sample is heading (its nearest item's category): {chips}"))
    return texts


def _key(run: runs.Run, view: runs.UserView) -> str:
    """The globe's key, as HTML: what each mark is, and the colour of every category drawn."""
    S = view.samples_3d.shape[1]
    marks = [("○", "history items"), ("■", figures.interest_marks(run, len(view.interests_3d))[0]),
             (f"<span style='color:{figures.NEXT}'>◆</span>", "true next item")]
    if run.model.chain_space == "euclidean":  # off the sphere: where x_t points, no paths (figures._sample_traces)
        marks += [("●", "directions of the random starts x_T"),
                  ("◆", f"direction x_t/‖x_t‖ of the {S} samples (coloured by their nearest item)")]
    else:
        marks += [("●", "random starts x_T"), ("◆", f"x_t of the {S} samples (coloured by their nearest item)"),
                  ("—", "paths x_T → x_t")]
    cats = [ui.category_chip(html.escape(name), color) for name, color in zip(run.categories, figures.colors(run))
            if name != runs.NO_CATEGORY]
    return (" · ".join(f"{mark} {html.escape(text) if '<' not in text else text}" for mark, text in marks)
            + "<br>" + " ".join(cats))


def _lands(run: runs.Run, view: runs.UserView) -> list[tuple[str, str]]:
    """Where each sample lands: the category of its x_0's nearest item, and that category's colour on the sphere."""
    final = view.samples.sample_top[view.samples.T, :, 0]
    return [(run.category(i), figures.color_of(run, i)) for i in final]


def payload(run: runs.Run, view: runs.UserView, next_item: int, ranks: np.ndarray, angles: np.ndarray,
            step: int, projector: bool) -> dict:
    """Everything the player draws, as JSON: the sphere and its T+1 frames, the two step charts, and each step's
    text. `step` is where a fresh player starts (the app's step); a mounted player keeps its own."""
    sphere, frames = figures.sphere_frames(run, view, next_item, projector=projector)
    note = (f"<b>This run ({html.escape(run.model_name)}) denoises in ordinary space, not on the sphere</b>: x_T "
            f"is Gaussian noise and x_t has a length; the globe shows the direction of each x_t, which is what ranks "
            f"items. " if run.model.chain_space == "euclidean" else "")
    data = dict(T=int(view.samples.T), step=int(step), fps=FPS, projector=bool(projector), note=note,
                sphere=json.loads(sphere.to_json()), frames=frames, key=_key(run, view),
                ranks=json.loads(figures.rank_figure(ranks, projector=projector).to_json()),
                angles=json.loads(figures.angle_figure(angles, projector=projector, lands=_lands(run, view)).to_json()),
                steps=_step_texts(run, view, next_item, ranks),
                angle_caption="Each sample's angle to the true next item: 90° means unrelated, as at the random "
                              "start. A line has its sample's colour on the sphere at the last step (the category "
                              "where it lands); samples that land alike differ by their dash. The yellow lines mark "
                              "the step shown; a gap in the rank chart means the true item is outside the top 50.")
    data["data_id"] = hashlib.sha1(json.dumps([run.id, list(map(int, view.hist)), view.samples_3d.shape, projector,
                                               float(np.nansum(view.samples_3d))]).encode()).hexdigest()[:16]
    return data


def show(ctx: ui.Context, view: runs.UserView, page: str) -> int:
    """The player for ctx's user on `page`. It starts at the app's step: the one this player last reported, else
    the link's or where the previous player stopped; that step becomes the app's and the URL's. Returns it."""
    run = ctx.run
    key = f"{page}_player:{run.id}:{ctx.user}"
    reported = st.session_state.get(key)  # {"step", "data_id"} once the browser has reported a step
    if isinstance(reported, dict) and isinstance(reported.get("step"), int) and 0 <= reported["step"] <= view.samples.T:
        step = reported["step"]
    else:
        step = ui.read_step(view.samples.T, default=view.samples.T)
    shown = figures.frame_steps(view.samples.T)
    step = min(shown, key=lambda k: abs(k - step))  # a long chain shows every few steps: the nearest one
    ranks = explore.true_item_ranks(view.samples.top, ctx.next_item)  # [T+1], NaN outside the top 50
    next_vector = run.model.item_vectors()[ctx.next_item].detach()
    angles = explore.angle_to(view.samples.x_t, next_vector)  # [T+1, S]
    # A container keyed like the player: another run or user mounts a new iframe. Without it the browser reuses
    # the iframe for the new key, which never says "ready" again, and the steps it reports are dropped.
    with st.container(key=f"box_{key}".replace("/", "_").replace(":", "_")):
        _component()(data=payload(run, view, ctx.next_item, ranks, angles, step, projector=ctx.projector), key=key,
                   default=None)
    st.session_state["_step"] = step  # the one step of the app, mirrored for the next player, page and run
    st.session_state["_step_T"] = view.samples.T  # and the chain it counts: another T opens at the same share
    st.query_params["step"] = str(step)
    return step
