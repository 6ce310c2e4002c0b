"""Denoising on the sphere: a user's next interest, from pure noise x_T to x_0, in several reverse samples."""
import numpy as np
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

ctx = ui.page_setup("Denoising on the sphere",
                    "Every dot is an item, placed by the model's own item vectors. DimeRec starts each sample at a "
                    "random point (x_T, pure noise) and walks it, step by step, to x_0: its guess of the user's next "
                    "interest. The items nearest to that guess are the recommendations.")
run = ctx.run

if not run.has_diffusion:  # nothing to sample: no sample or seed controls either
    view = runs.user_view(run.id, run.stamp, ctx.hist, runs.DEFAULT_SAMPLES, 0)
    st.info(f"This run ({run.model_name}) has no diffusion: it turns the user's interests straight into its user "
            f"vectors, so there is nothing to denoise. The picture shows the history, the interests and the true "
            f"next item; pick a DimeRec run in the sidebar to watch the reverse process.")
    left, right = st.columns([3, 2])
    left.plotly_chart(figures.sphere_figure(run, view, ctx.next_item, None), key="denoise_sphere")
    right.subheader("Recommendations")
    ui.show_items(ui.items_frame(run, view.top[0][:10], ctx.next_item), right)
    st.stop()

controls = st.columns([2, 1, 3])
n_samples = controls[0].slider("Reverse samples", 1, 12, 6, key="denoise_samples",
                               help="Independent runs of the reverse process from different random starts. "
                                    "They can land on different interests: that diversity is the point of diffusion.")
seed = int(controls[1].number_input("Seed", 0, 10_000, 0, key="denoise_seed",
                                    help="Seed of the random starts; change it for a new set of samples."))
view = runs.user_view(run.id, run.stamp, ctx.hist, n_samples, seed)
if run.model.chain_space == "euclidean":
    st.caption(f"This run ({run.model_name}) denoises in ordinary space, not on the sphere: x_T is Gaussian noise "
               f"and x_t has a length. The picture shows the direction of each x_t, which is what ranks items.")

T = view.samples.T
playing = controls[2].toggle("▶ Play", key="denoise_play",
                             help="Steps through the reverse process on its own, looping; switch off to pause.")
ranks = np.array([np.flatnonzero(top == ctx.next_item)[0] + 1 if (top == ctx.next_item).any() else np.nan
                  for top in view.samples.top])
next_vector = run.model.item_vectors()[ctx.next_item].detach()
angles = explore.angle_to(view.samples.x_t, next_vector)  # [T+1, S]


@st.fragment(run_every=0.9 if playing else None)
def stepper() -> None:
    step = ui.read_step(T, default=T)
    # set the widget only when the app moves it (play, a link, a page revisited): a value set on every run
    # is pushed to the browser and overwrites a key press made while the previous run was drawing
    if playing:
        st.session_state.denoise_step = (step + 1) % (T + 1)
    elif st.session_state.get("denoise_step") != step:
        st.session_state.denoise_step = step
    step = st.slider("Reverse step", 0, T, key="denoise_step",
                     help=f"0: the random starts x_T. Each step removes some noise (t goes from {T} down to 0). "
                          f"{T}: the final x_0 that DimeRec serves.")
    st.session_state["_step"] = step
    st.query_params["step"] = str(step)
    t = T - step
    left, right = st.columns([11, 9])
    with left:
        stage = "pure noise" if step == 0 else ("the final x_0" if step == T else "partly denoised")
        st.markdown(f"**After {step} of {T} reverse steps** — x_t at t = {t} ({stage})")
        st.plotly_chart(figures.sphere_figure(run, view, ctx.next_item, step), key="denoise_sphere")
    with right:
        what = "x_0" if step == T else f"x̂0 (the denoiser's guess of x_0 from t = {t})"
        st.markdown(f"**Nearest items to {what}**, best over the {n_samples} samples")
        rank = ranks[step]
        title = f"*{run.title(ctx.next_item)}* ({run.category(ctx.next_item)})"
        if np.isnan(rank):
            st.markdown(f":material/cancel: The true next item, {title}, is **not in the top 50** at this step.")
        else:
            st.markdown(f":material/check_circle: The true next item, {title}, is **#{int(rank)}** of the top 50 "
                        f"at this step.")
        ui.show_items(ui.items_frame(run, view.samples.top[step][:10], ctx.next_item), height=388)
        first = view.samples.sample_top[step, :, 0]
        chips = " · ".join(f"s{s + 1} → " + ui.category_chip(run.category(i), figures.color_of(run, i))
                           for s, i in enumerate(first))
        st.markdown(f"Where each sample is heading (its nearest item's category): {chips}", unsafe_allow_html=True)
    st.plotly_chart(figures.step_rank_figure(ranks, angles, step), key="denoise_ranks")
    st.caption("Left: the rank of the true next item among the recommendations at each step (a gap: outside the "
               "top 50). Right: each sample's angle to the true next item; 90° means unrelated, as at the random "
               "start. The yellow line is the step shown above.")


stepper()

with st.expander("How to read this picture, and how it is drawn"):
    p = run.projection
    how = ("three axes chosen to keep the item categories apart (a shrunk linear discriminant analysis of the "
           "item vectors by category)" if p.method == "categories" else
           "the three directions of largest spread of the item vectors (PCA)")
    grw = run.config["model_config"].get("grw", True)
    geometry = ("x_t lives on the unit sphere of the model's d-dimensional space." if grw else
                "This run uses Euclidean noise (no geodesic random walk): x_t lives in R^d, and the picture "
                "shows its direction.")
    st.markdown(
        f"""
- **Dots**: the {run.data.n_items:,} items, coloured by category; hover for titles. Open circles: this user's
  history. Yellow diamond: the true next item. Grey squares I1…I{len(view.interests_3d)}: the interests GEM
  extracted from the history, which guide every denoising step.
- **Black paths**: each reverse sample from its random start (grey dot) to where it is now (diamond, coloured by the
  category of its nearest item). Click legend entries to hide or show layers; "x̂0 guess" shows the denoiser's
  current guess of x_0 for each sample.
- **The projection.** {geometry} The model has d = {run.projection.components.shape[1]} dimensions; the picture
  looks at them along {how}, fitted once per run, then puts every point back on the unit sphere. The map is linear,
  so a random start x_T lands at a random place and each path is the true path's shadow, not a redrawing.
  Those three axes hold {p.explained:.0%} of the items' length; {run.agreement[0]:.0%} of the items' 10 nearest
  neighbours in the picture share their category ({run.agreement[1]:.0%} in the full space). UMAP was not used: it
  places new points only near fitted items, so it would draw pure noise as if it already sat in a category.
"""
    )
