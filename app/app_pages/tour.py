"""Tour: DimeRec in five steps, each with a live figure from the selected run and user."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import figures, player, runs, ui
from dimerec import explore
from dimerec.serving import ranking

CHAPTERS = ["1 · The problem", "2 · Interests (GEM)", "3 · Noise on the sphere", "4 · Denoising", "5 · Retrieval"]

# A compact header (no caption, no divider): in chapters 3 and 4 the globe and its step control must fit one
# 1280x800 screen under it, with the sidebar open. The caption is said in chapter 1.
ctx = ui.page_setup("DimeRec in five steps", compact=True)
run = ctx.run
view = runs.user_view(run.id, run.stamp, ctx.hist, runs.DEFAULT_SAMPLES, 0)


def go_next() -> None:
    i = CHAPTERS.index(st.session_state.tour_chapter)
    st.session_state.tour_chapter = CHAPTERS[(i + 1) % len(CHAPTERS)]


if "tour_chapter" not in st.session_state:  # a fresh page reads the link (?chapter=1..5)
    asked = ui.parse_int(st.query_params.get("chapter"))
    if asked is not None and 1 <= asked <= len(CHAPTERS):
        st.session_state.tour_chapter = CHAPTERS[asked - 1]
    elif "chapter" in st.query_params:
        st.error(f"Chapter {st.query_params.get('chapter')!r} from the link is not 1 to {len(CHAPTERS)}; "
                 f"showing chapter 1.")
nav, button = st.columns([6, 1], vertical_alignment="bottom")
chapter = nav.radio("Chapter", CHAPTERS, horizontal=True, key="tour_chapter", label_visibility="collapsed")
st.query_params["chapter"] = str(CHAPTERS.index(chapter) + 1)
button.button("Next →", key="tour_next", on_click=go_next, use_container_width=True)

if chapter == CHAPTERS[0]:
    st.subheader("The problem: what will this user pick next?")
    st.caption("A guided tour for a class: one user of the selected run, from history to recommendation. Every "
               "figure is computed live from the trained model; change the user or the run in the sidebar.")
    st.markdown(
        f"User **{ctx.user}** has {len(view.hist)} items in their recent history (left to right, oldest first), "
        f"from {run.data.n_items:,} items in all. A sequential recommender must rank all items so that the one the "
        f"user picks next (★) is near the top. Real users hold **several interests at once**, and those drift: "
        f"one vector per user blurs them together. DimeRec keeps several, then lets a diffusion model decide "
        f"where the *next* interest lies.")
    ui.chart(figures.history_figure(run, view.hist, ctx.next_item), key="tour_history")
elif chapter == CHAPTERS[1]:
    st.subheader("GEM: the history becomes K interest vectors")
    st.markdown(
        "The guidance extraction module (GEM, ComiRec-SA's self-attention) gives every interest its own attention "
        "over the history: each interest is a weighted average of the items it attends to. Training pulls the "
        "interest closest to the next item towards it (L_gem). These K vectors are the *guidance* of the diffusion.")
    if view.attention is not None:
        left, right = st.columns([3, 2])
        ui.chart(figures.attention_figure(run, view.hist, view.attention), key="tour_attention", container=left)
        right.markdown("**Category mix of each interest's 20 nearest items**")
        ui.chart(figures.category_mix_figure(run, view.interest_top), key="tour_mix", container=right)
    else:
        ui.chart(figures.category_mix_figure(run, view.interest_top), key="tour_mix")
    for i, j, shared in explore.redundant_interests(view.interest_top):
        st.markdown(f"**I{i + 1} and I{j + 1} are redundant**: {shared} of their 10 nearest items are the same, so "
                    f"they are one interest said twice.")
    st.page_link("app_pages/interests.py", label="More on the Interests page", icon=":material/hub:")
elif chapter == CHAPTERS[2]:
    st.subheader("Noise on the sphere")
    if not run.has_diffusion:
        st.info(f"This run ({run.model_name}) has no diffusion. Pick a DimeRec run in the sidebar.")
        st.stop()
    T = view.samples.T
    grw = run.config["model_config"].get("grw", True)
    euclidean = run.model.chain_space == "euclidean"
    left, right = st.columns([3, 2])  # the globe and its slider first, the words and the angle beside them
    t = left.slider("Noise step t", 0, T, T // 2, key="tour_t")
    paths_3d, angles = runs.forward_view(run.id, run.stamp, ctx.next_item, 5)
    ui.chart(figures.forward_figure(run, paths_3d, ctx.next_item, t, height=460), key="tour_forward", container=left)
    right.markdown(
        "Training teaches a denoiser to undo noise. DimeRec keeps every vector on the unit sphere and adds noise by "
        "a **geodesic random walk**: the true next item x_0 slides along the sphere, further as the step t grows, "
        f"until at t = {T} it is as far away as a random point. Each black path is one noise draw, seen at every "
        "step t."
        + (f" (This run, {run.model_name}, noises in ordinary space instead: x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε "
           "leaves the sphere, and the picture shows its direction.)" if euclidean else
           "" if grw else " (This run uses Euclidean noise instead, the `--no-grw` ablation: the paths leave the "
                          "sphere and the picture shows their direction.)"))
    fig = go.Figure(go.Scatter(x=np.arange(T + 1), y=angles.mean(axis=1), mode="lines+markers",
                               line=dict(color=figures.PATH), name="angle from x_0"))
    fig.add_hline(y=90, line=dict(dash="dot", color="#888"), annotation_text="a random point: ≈ 90°")
    fig.add_vline(x=t, line=dict(color=figures.NEXT, width=3))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="noise step t",
                      yaxis_title="angle x_t to x_0 (°)")
    ui.chart(fig, key="tour_angle", container=right)
    right.caption("In the model's 64 dimensions a random point is almost exactly 90° from any item; the noise "
                  "schedule ends there, so the reverse process can start from a random point.")
elif chapter == CHAPTERS[3]:
    st.subheader("Denoising: from a random point to the next interest")
    if not run.has_diffusion:
        st.info(f"This run ({run.model_name}) has no diffusion. Pick a DimeRec run in the sidebar.")
        st.stop()
    player.show(ctx, view, page="tour")  # the globe and its step control first, the words under them
    guide = figures.interest_marks(run, len(view.interests_3d))[0]
    st.markdown(
        f"To recommend, {'DimeRec' if run.model_name == 'dimerec' else run.model_name} starts from random points "
        f"(grey dots) and applies the denoiser {view.samples.T} times, guided by the user's {guide} (grey "
        f"square{'s' if len(view.interests_3d) > 1 else ''}). Each sample walks to an x_0: a guess of the next "
        "interest. Samples from different starts can land on different interests."
        + (" This run's chain is not on the sphere: the globe shows where each x_t points." if
           run.model.chain_space == "euclidean" else ""))
    st.page_link("app_pages/denoising.py", label="More samples, another seed: the Denoising page",
                 icon=":material/public:")
else:
    st.subheader("Retrieval: the items nearest to x_0")
    st.markdown("The recommendations are the items with the largest inner product with what the run serves: x_0 "
                "(with several samples, an item scores its best over them, or their mixture), or the first guess x̂0 "
                "for a run served by its mean. This is the list its metrics were scored on, computed by the same "
                "code. Did the true next item make it?")
    top = view.top
    rank = explore.true_item_ranks(top, ctx.next_item)
    if not np.isnan(rank):
        st.success(f"The true next item, {run.title(ctx.next_item)}, is #{int(rank)} of the top 50.")
    else:
        st.warning(f"The true next item, {run.title(ctx.next_item)}, is not in the top 50 for this user.")
    test = (run.metrics or {}).get("test") or {}
    if "HR@50" in test:
        refs = runs.reference_levels(run.id, run.stamp, "test")
        ceiling = runs.ceiling(run.id, run.stamp, "test")  # a ceiling, not a rival: said apart
        beside = ", ".join(f"{name} {ui.pct(level['HR@50'])}" for name, level in refs.items() if "HR@50" in level)
        better = [name for name, level in refs.items() if level.get("HR@50", 1.0) > test["HR@50"]]
        if ceiling is not None:
            beside += (f"; the ceiling on this synthetic world, ranking by the generator's own probabilities, is "
                       f"{ui.pct(ceiling['HR@50'])}")
        st.markdown(f"Over all test users of this run, the true next item is in the top 50 "
                    f"**{ui.pct(test['HR@50'])}** of the time (HR@50), NDCG@50 = {ui.pct(test['NDCG@50'])}. "
                    f"Beside it, on the same test users: {beside}."
                    + (f" **Better than this run: {' and '.join(better)}** — the Steps page shows where its "
                       f"reverse chain loses ground." if better else ""))
    ui.show_items(ui.items_frame(run, top[:10], ctx.next_item, view.top_scores[:10]))
    shortest, median, longest = explore.vector_lengths(run.model.item_vectors().detach().numpy())
    merge = ranking(run.model, run.serving).merge
    merged = "the best over the samples" if merge == "max" else f"merged over the samples ({merge})"
    st.caption(f"**score**: the inner product of the item's vector with the vector served (x_0), {merged} — not a "
               f"cosine: this run's item vectors are not unit length (from {shortest:.2f} to "
               f"{longest:.2f}, median {median:.2f}), so a longer item vector scores higher in the same direction.")
    st.page_link("app_pages/steps.py", label="How good is the guess at each reverse step?", icon=":material/stairs:")
    if runs.has_lesson(run):
        st.page_link("app_pages/sample_or_mean.py", label="Why does the chain lose to its first guess? Sample or mean?",
                     icon=":material/casino:")
