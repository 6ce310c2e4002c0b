"""Interests: what GEM reads from the history, and (on planted) the interests the user really holds."""
import pandas as pd
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

ctx = ui.page_setup("Interests",
                    "DimeRec's first module, GEM, reads the history and writes K interest vectors, each an "
                    "attention-weighted average of history items. They guide the denoiser.")
run = ctx.run
view = runs.user_view(run.id, run.stamp, ctx.hist, runs.DEFAULT_SAMPLES, 0)
K = len(view.interests)
truth = run.data.ground_truth

planted_now = None
if truth is not None:
    cut = len(run.data.sequences[ctx.user]) - 1  # the step that emitted the true next item
    names = truth["category_names"]
    emitted = truth["emitting_interest"][ctx.user][cut - len(view.hist):cut]
    history_truth = ["" if c >= 0 else "noise: not from an interest" for c in emitted]
    held = truth["user_interests"][ctx.user][cut]
    weights = truth["interest_weights"][ctx.user][cut]
    planted_now = pd.DataFrame({"category": [names[c] for c in held if c >= 0],
                                "weight": [w for c, w in zip(held, weights) if c >= 0]}
                               ).sort_values("weight", ascending=False)
else:
    history_truth = None

left, right = st.columns([3, 2])
with left:
    st.subheader("Which history items each interest reads")
    if view.attention is None:
        st.info(f"This run's model ({run.model_name}) has no attention to show: it reads the history as its "
                f"{figures.interest_marks(run, K)[0]}. A DimeRec run with the ComiRec-SA extractor "
                f"(`--gem comirec-sa`, the default) shows it here.")
        ui.show_items(ui.items_frame(run, view.hist))
    else:
        ui.chart(figures.attention_figure(run, view.hist, view.attention, history_truth), key="interests_attention")
        st.caption("Rows: the history, oldest at the top; ■ the item's category colour"
                   + ("; [noise] an item the planted world drew at random, not from an interest."
                      if history_truth else ".")
                   + " Each column sums to 1 over the history.")
with right:
    st.subheader("Category mix of each interest")
    ui.chart(figures.category_mix_figure(run, view.interest_top), key="interests_mix")
    if planted_now is not None:
        st.subheader("Planted (true) interests")
        st.caption("What the synthetic world says this user held when the next item was chosen: the categories and "
                   "their weights. Compare with the dominant category of each extracted interest above.")
        st.dataframe(planted_now, hide_index=True,
                     column_config={"weight": st.column_config.ProgressColumn("weight", min_value=0.0, max_value=1.0,
                                                                              format="%.2f")})
        dominant = [run.categories[c] for c in explore.dominant_categories(view.interest_top, run.item_category)]
        found = sorted(set(planted_now["category"]) & set(dominant))
        missed = [c for c in planted_now["category"] if c not in dominant]
        st.markdown(f"Extracted interests cover **{len(found)} of {len(planted_now)}** planted interests"
                    + (f"; not covered: {', '.join(missed)}." if missed else "."))

st.subheader("The item map (UMAP)")
if not runs.has_item_map(run) and not st.session_state.get(f"item_map_asked:{run.id}"):
    st.caption("This run has no item map stored with it (app/make_default_runs.py stores one with each built-in "
               "run). Fitting one takes a few seconds, and up to a minute the first time UMAP runs on this server.")
    st.button("Fit the item map", key="item_map_fit",
              on_click=lambda: st.session_state.update({f"item_map_asked:{run.id}": True}))
else:
    where = runs.map_view(run.id, run.stamp, ctx.user)
    ui.chart(figures.item_map_figure(run, view, where, ctx.next_item), key="interests_map")
    fitted = ("all" if where.fitted_on == run.data.n_items else f"a seeded sample of {where.fitted_on:,} of the")
    st.caption(
        f"Every item of the run, laid out in 2-D by UMAP (fitted on {fitted} {run.data.n_items:,} items' vectors by "
        f"cosine, {'once, when the run was made' if where.stored else 'once per run on this server'}): nearby items "
        f"have similar vectors. The user's interests"
        + (" and the chain's guesses x̂0 (light: early steps; black diamonds: x_0, what is served) are placed on it by "
           "UMAP's transform, from the samples the other pages show." if where.guesses_2d is not None else
           " are placed on it by UMAP's transform.")
        + (" **The random start x_T is left off on purpose:** transform can only put a new point among the items "
           "the map was fitted on, so pure noise, about 90° from every item, would be drawn as if it already sat "
           "in a category. The globe on the Denoising page draws x_T honestly." if run.has_diffusion else "")
        + " Distances on a UMAP map are only meaningful between near neighbours.")

st.subheader("Nearest items of each interest")
redundant = explore.redundant_interests(view.interest_top)
if redundant:
    st.markdown("**Redundant interests:** " + "; ".join(
        f"I{i + 1} and I{j + 1} share {shared} of their 10 nearest items" for i, j, shared in redundant)
        + " — each pair is one interest said twice, so this user has fewer distinct interests than K = "
        f"{K}.")
else:
    st.caption(f"No two interests share 8 or more of their 10 nearest items: the K = {K} interests are distinct.")
cols = st.columns(2)  # two a row: at K in a row the category column was cut at 1280 px
for k in range(K):
    with cols[k % 2]:
        st.markdown(f"**Interest I{k + 1}**")
        ui.show_items(ui.items_frame(run, view.interest_top[k][:5]).drop(columns=["#"]), key=f"interest_top_{k}")

