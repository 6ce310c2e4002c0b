"""What every page shares: the run and user selectors in the sidebar, the URL state
(?run=…&user=…&step=…), and clear messages for bad input. Presentation only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from app import figures, runs


@dataclass
class Context:
    run: runs.Run
    user: int  # a held-out user of the run's split
    presets: dict[int, str]  # preset user -> why it was picked
    projector: bool = False  # the projector switch: figures at projector text size
    controls: object = None  # a sidebar container under the user selector, for the page's own controls

    @property
    def hist(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.run.history(self.user))

    @property
    def next_item(self) -> int:
        return self.run.next_item(self.user)


def _first(*values):
    return next((v for v in values if v is not None), None)


def select_run() -> runs.Run:
    """The run selector; stops the page with a clear message when the run cannot be shown."""
    available = runs.discover_runs()
    if not available:
        st.error(f"No runs found: the built-in runs should be in {runs.DEFAULT_RUNS} "
                 f"(regenerate them with `python app/make_default_runs.py`), others under {runs.runs_root()}/.")
        st.stop()
    from_url = st.query_params.get("run")
    wanted = _first(st.session_state.get("run_select"), st.session_state.get("_run"), from_url)
    if wanted is not None and wanted not in available:
        st.error(f"Run {wanted!r} was not found. Runs are the built-in ones (default/…) and the directories "
                 f"under {runs.runs_root()}/ that hold a config.json; showing the built-in run instead.")
        wanted = None
    if wanted is None:
        wanted = runs.DEFAULT_RUN_ID if runs.DEFAULT_RUN_ID in available else next(iter(available))
    st.session_state.run_select = wanted
    run_id = st.sidebar.selectbox("Run", list(available), key="run_select",
                                  format_func=lambda r: runs.run_label(r, available[r]),
                                  help="The built-in runs (trained on the synthetic `planted` world) and every run "
                                       "directory under runs/.")
    st.session_state["_run"] = run_id
    st.query_params["run"] = run_id
    try:
        run = runs.load_run(run_id)
    except runs.RunError as err:
        st.error(f"This run cannot be shown: {err}")
        st.stop()
    below = runs.below_popularity(run)
    if below is not None:  # said under the selector on every page: a class must not take it for the model's best
        st.sidebar.warning(f"**Below popularity.** {popularity_sentence(run, *below)}", icon=":material/warning:")
    return run


def popularity_sentence(run: runs.Run, ours: float, pop: float) -> str:
    """That the run ranks below MostPopular, in numbers, how long it trained and why it stopped (its metrics.json):
    a run stopped by its patience had reached its validation plateau; one stopped by a budget was still learning."""
    metrics = run.metrics or {}
    trained = ""
    if "train_minutes" in metrics:
        epochs = metrics.get("epochs_trained", metrics.get("epochs", "?"))
        plateau = metrics.get("stopped_by") == "patience"
        trained = (f" Trained {metrics['train_minutes']:.1f} min ({epochs:g} epochs), " if isinstance(epochs, float)
                   else f" Trained {metrics['train_minutes']:.1f} min ({epochs} epochs), ")
        trained += ("to its validation plateau: this is the model at its best here, not an unfinished run."
                    if plateau else f"stopped by its budget: a {run.model_name} still learning, not at its best.")
    return f"Test HR@50 {pct(ours)}, under MostPopular's {pct(pop)} on the same users.{trained}"


def parse_int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def select_user(run: runs.Run) -> tuple[int, dict[int, str]]:
    """The user selector: preset users first (with the reason each was picked), then every held-out user."""
    picks = dict(runs.presets(run.id))
    held_out = set(run.held_out.tolist())
    mirror = st.session_state.get("_user")
    candidates = [st.session_state.get("user_select"), mirror[1] if mirror and mirror[0] == run.id else None]
    user = next((u for u in candidates if u in held_out), None)
    if user is None and mirror is None and st.session_state.get("user_select") is None:
        raw = st.query_params.get("user")  # only a fresh page reads the link
        if raw is not None:
            parsed = parse_int(raw)
            if parsed in held_out:
                user = parsed
            else:
                examples = ", ".join(str(u) for u in list(picks)[:3])
                st.error(f"User {raw!r} from the link is not a held-out user of this run. The app shows the "
                         f"{len(held_out)} validation and test users of the run's split (for example {examples}); "
                         f"showing a preset user instead.")
    if user is None:
        user = next(iter(picks)) if picks else int(run.held_out[0])
    options = list(picks) + [u for u in run.held_out.tolist() if u not in picks]
    st.session_state.user_select = user
    user = st.sidebar.selectbox(
        "User", options, key="user_select",
        format_func=lambda u: f"★ user {u}" if u in picks else f"user {u}",
        help="★ marks users picked automatically because they show something interesting; type a user id to "
             "search. Only held-out (validation and test) users are listed: the model never trained on them.")
    if user in picks:
        st.sidebar.caption(f"★ Picked because: {picks[user]}.")
    st.session_state["_user"] = (run.id, user)
    st.query_params["user"] = str(user)
    return user, picks


# Streamlit's wide layout keeps 6rem above and 5rem beside the page: at 1280x800 with the sidebar open that
# leaves 820 px by 700 for a figure. The explorer keeps 3.5rem and 1.5rem (about 930 by 750).
PAGE_CSS = """<style>
.block-container { padding-top: 3.5rem !important; padding-left: 1.5rem !important; padding-right: 1.5rem !important; }
[data-testid="stMarkdownContainer"] table { display: block; max-width: 100%; overflow-x: auto; }
[data-testid="stMarkdownContainer"] th, [data-testid="stMarkdownContainer"] td { padding: 0.4rem 0.45rem; }
</style>"""  # Paper vs ours' 12-column tables fit 1280 px with the sidebar open; a wider one scrolls, not clips
PROJECTOR_CSS = """<style>
.block-container { padding-top: 2.8rem !important; }
h1 { font-size: 1.9rem !important; padding: 0 0 0.2rem 0 !important; }
[data-testid="stCaptionContainer"], [data-testid="stMarkdownContainer"] p, [data-testid="stWidgetLabel"] p
  { font-size: 17px !important; }
</style>"""


COMPACT_CSS = """<style>
.block-container { padding-top: 2.8rem !important; }
h1 { font-size: 1.9rem !important; padding: 0 0 0.2rem 0 !important; }
h3 { padding: 0.2rem 0 0.1rem 0 !important; }
</style>"""


def projector() -> bool:
    """The projector switch (sidebar, kept in the URL as ?projector=1): figure fonts of at least 17 px, a compact
    header, narrower page margins. Read once per run; pages pass it to the figures."""
    if "projector" not in st.session_state:
        st.session_state.projector = st.query_params.get("projector") == "1"
    on = st.sidebar.toggle("Projector mode", key="projector",
                           help="Large figure text and a compact header, for a 1280×800 projector. "
                                "Kept in the address bar (projector=1).")
    if on:
        st.query_params["projector"] = "1"
        st.markdown(PROJECTOR_CSS, unsafe_allow_html=True)
    elif "projector" in st.query_params:
        del st.query_params["projector"]
    return on


# The mouse wheel scrolls the page over every chart (plotly zooms a 3-D scene by it by default, which traps a
# teacher scrolling past the globe); a globe zooms by its own buttons (figures.zoom_buttons).
CHART_CONFIG = {"scrollZoom": False, "displaylogo": False}


# plotly's 3-D camera takes every wheel event over a scene and cancels it, even with scrollZoom off; this stops the
# event on its way down to the scene (capture phase), so that the page scrolls and the camera stays put.
WHEEL_SCRIPT = """<script>
if (!window.dimerecWheel) {
  window.dimerecWheel = true;
  window.addEventListener("wheel", (e) => {
    if (e.target.closest && e.target.closest(".js-plotly-plot .gl-container")) e.stopPropagation();
  }, { capture: true });
}
</script>"""


def chart(fig, key: str, container=st, **kwargs) -> None:
    """st.plotly_chart, with projector-size text when the projector switch is on, and no zoom by the wheel."""
    if st.session_state.get("projector"):
        fig = figures.projector_fonts(fig)
    container.plotly_chart(fig, key=key, config=CHART_CONFIG, **kwargs)


def page_setup(title: str, caption: str | None = None, need_user: bool = True,
               compact: bool = False) -> Context | runs.Run:
    """Title, sidebar selectors and URL state for a page. Returns the Context (or only the run). In projector
    mode the caption moves into a collapsed "About this page". `compact`: the projector's small header always."""
    st.markdown(PAGE_CSS, unsafe_allow_html=True)
    on_projector = projector()
    if compact and not on_projector:
        st.markdown(COMPACT_CSS, unsafe_allow_html=True)
    st.sidebar.html(WHEEL_SCRIPT, unsafe_allow_javascript=True)
    st.title(title)
    if caption and on_projector:
        with st.expander("About this page"):
            st.caption(caption)
    elif caption:
        st.caption(caption)
    run = select_run()
    if not need_user:
        _sidebar_footer(run)
        return run
    if len(run.held_out) == 0:
        st.error(f"{run.path}: the dataset has no held-out user with two or more items; nothing to show.")
        st.stop()
    user, picks = select_user(run)
    controls = st.sidebar.container()
    _sidebar_footer(run)
    return Context(run=run, user=user, presets=picks, projector=on_projector, controls=controls)


def pct(value: float) -> str:
    """The app's one number format: a share in percent, one decimal (0.375 -> 37.5%)."""
    return f"{value:.1%}"


def _sidebar_footer(run: runs.Run) -> None:
    test = (run.metrics or {}).get("test") or {}
    line = f"test HR@50 {pct(test['HR@50'])} · NDCG@50 {pct(test['NDCG@50'])}" if "HR@50" in test else "no metrics.json"
    st.sidebar.divider()
    st.sidebar.caption(f"**This run:** {runs.run_summary(run.config)} · {run.data.n_items:,} items · {line}")
    st.sidebar.caption("The address bar holds this view (run, user, step): copy it to share it.")
    with st.sidebar.expander("Glossary"):
        st.markdown(GLOSSARY)


GLOSSARY = """
- **GEM** — the guidance (multi-interest) extractor: ComiRec-SA turns the history into K = 4 interest vectors.
- **DAM** — the diffusion module: it noises the next item's vector on the sphere and learns to denoise it.
- **x_T, x_t, x_0** — the reverse chain: x_T is a random point (pure noise, step 0), x_0 its end (step T), the
  vector DimeRec serves; on every page step k sits at x_(T−k).
- **x̂0** — the denoiser's guess of x_0 from where the chain is now; retrieving with it gives a recommendation
  at every step.
- **GRW** — geodesic random walk: noise that moves along the sphere instead of off it (`--no-grw` is the
  ablation).
- **HR@50** — share of users whose true next item is in their top 50. **NDCG@50** — the same, weighted by how
  high it ranks.
- **no-diffusion control** — DimeRec's GEM and losses with an MLP over the interests instead of the diffusion.
- **oracle (planted truth)** — ranks items by the planted world's own next-item probabilities: the ceiling no
  model can beat there on average (the Steps page draws it).
- **planted** — the built-in synthetic world: 480 named items in 12 categories, 2,000 users whose 2–4
  interests drift; its true interests are known, so the app can show them.
"""


def read_step(T: int, default: int) -> int:
    """The reverse step from the widget, its mirror or the link (?step=), in 0..T. A step kept from a run with
    another chain length opens at the same share of this chain (step 10 of 20 becomes step 100 of 200)."""
    value, kept_T = st.session_state.get("_step"), st.session_state.get("_step_T")
    if value is not None and kept_T and kept_T != T:
        value = int(round(value * T / kept_T))
    if value is None and "step" in st.query_params:
        raw = st.query_params.get("step")
        value = parse_int(raw)
        if value is None or not 0 <= value <= T:
            st.error(f"Step {raw!r} from the link is not a reverse step of this run (0 to {T}); "
                     f"showing step {default} instead.")
            value = None
    value = default if value is None else int(min(max(value, 0), T))
    return value


def category_chip(name: str, color: str) -> str:
    return f"<span style='color:{color}'>●</span> {name}"


def items_frame(run: runs.Run, items, next_item: int | None = None, scores=None) -> pd.DataFrame:
    """A table of items: rank, title, category, and which one is the true next item."""
    items = np.asarray(items)
    frame = pd.DataFrame({"#": np.arange(1, len(items) + 1), "item": [run.short_title(i) for i in items],
                          "category": [run.categories_of(i) for i in items]})
    if next_item is not None:
        frame.insert(1, "next?", ["✓ next" if i == next_item else "" for i in items])
    if scores is not None:
        frame["score"] = np.round(np.asarray(scores, dtype=float), 2)
    return frame


ITEM_COLUMNS = {"#": st.column_config.NumberColumn("#", width=34),
                "next?": st.column_config.TextColumn("next?", width=54, help="✓ the user's true next item"),
                "new?": st.column_config.TextColumn("new?", width=46, help="not in the top 10 before the edit"),
                "score": st.column_config.NumberColumn(
                    "score", width=52, help="the item's score for this user: its inner product with the user vector "
                                            "(the best over several; a mixture of samples: its log-probability). "
                                            "Item vectors are not unit length, so it is not a cosine.")}


def show_items(frame: pd.DataFrame, container=st, compact: bool = False, **kwargs) -> None:
    """st.dataframe of an items_frame, with narrow columns for the marks; `compact`: three tables in a row (no rank
    column, the marks narrower still), so that the titles and categories are not cut at 1280 px."""
    config = ITEM_COLUMNS
    if compact:
        frame = frame.drop(columns=["#"])
        config = {**ITEM_COLUMNS, "next?": st.column_config.TextColumn("next?", width=40, help="✓ the true next item"),
                  "new?": st.column_config.TextColumn("new?", width=40, help="not in the top 10 before the edit")}
        frame = frame.assign(**{"next?": frame["next?"].str.replace("✓ next", "✓")}) if "next?" in frame else frame
    container.dataframe(frame, hide_index=True, column_config=config, **kwargs)
