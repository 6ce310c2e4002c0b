"""Denoising on the sphere: a user's next interest, from pure noise x_T to x_0, in several reverse samples."""
import streamlit as st

from app import figures, player, runs, ui

ctx = ui.page_setup("Denoising on the sphere",
                    "Every dot is an item, placed by the model's own item vectors. A diffusion recommender (DimeRec, "
                    "or the run's model) starts each sample at a random point (x_T, pure noise) and walks it, step by "
                    "step, to x_0: its guess of the user's next interest. The items nearest to that guess are the "
                    "recommendations.")
run = ctx.run

if not run.has_diffusion:  # nothing to sample: no sample or seed controls either
    view = runs.user_view(run.id, run.stamp, ctx.hist, runs.DEFAULT_SAMPLES, 0)
    st.info(f"This run ({run.model_name}) has no diffusion: it turns the user's interests straight into its user "
            f"vectors, so there is nothing to denoise. The picture shows the history, the interests and the true "
            f"next item; pick a DimeRec run in the sidebar to watch the reverse process.")
    left, right = st.columns([3, 2])
    ui.chart(figures.sphere_figure(run, view, ctx.next_item, None), key="denoise_sphere", container=left)
    right.subheader("Recommendations")
    ui.show_items(ui.items_frame(run, view.top[:10], ctx.next_item), right)
    st.stop()

# the sample controls sit in the sidebar, beside the run and user: the page's own room goes to the sphere
n_samples = ctx.controls.slider("Reverse samples", 1, 12, 6, key="denoise_samples",
                                help="Independent runs of the reverse process from different random starts. "
                                     "They can land on different interests: that diversity is the point of "
                                     "diffusion.")
seed = int(ctx.controls.number_input("Seed of the random starts", 0, 10_000, 0, key="denoise_seed",
                                     help="Change it for a new set of samples."))
view = runs.user_view(run.id, run.stamp, ctx.hist, n_samples, seed)

player.show(ctx, view, page="denoise")

with st.expander("How to read this picture, and how it is drawn"):
    p = run.projection
    guide = figures.interest_marks(run, len(view.interests_3d))[0]
    samples = ("**Diamonds**: the direction of each reverse sample now, coloured by the category of its nearest "
               "item; grey dots: the directions of the random starts." if run.model.chain_space == "euclidean" else
               "**Black paths**: each reverse sample from its random start (grey dot) to where it is now (diamond, "
               "coloured by the category of its nearest item).")
    how = ("three axes chosen to keep the item categories apart (a shrunk linear discriminant analysis of the "
           "item vectors by category)" if p.method == "categories" else
           "the three directions of largest spread of the item vectors (PCA)")
    grw = run.config["model_config"].get("grw", True)
    euclidean = run.model.chain_space == "euclidean"
    geometry = (f"This run ({run.model_name}) denoises in ordinary space: x_T is Gaussian noise and x_t lives in "
                "R^d with a length, so the picture shows only its direction x_t/‖x_t‖, as dots, without paths "
                "(its direction jumps about while the noise is large)." if euclidean else
                "x_t lives on the unit sphere of the model's d-dimensional space." if grw else
                "This run uses Euclidean noise (no geodesic random walk): x_t lives in R^d, and the picture "
                "shows its direction.")
    st.markdown(
        f"""
- **Dots**: the {run.data.n_items:,} items, coloured by category; hover for titles. Open circles: this user's
  history. Yellow diamond: the true next item. Grey squares: {guide}, which guide every denoising step.
- {samples}
- **The projection.** {geometry} The model has d = {run.projection.components.shape[1]} dimensions; the picture
  looks at them along {how}, fitted once per run, then puts every point back on the unit sphere. The map is linear,
  so a random start x_T lands at a random place and each path is the true path's shadow, not a redrawing.
  Those three axes hold {p.explained:.0%} of the items' length; {run.agreement[0]:.0%} of the items' 10 nearest
  neighbours in the picture share their category ({run.agreement[1]:.0%} in the full space). UMAP was not used: it
  places new points only near fitted items, so it would draw pure noise as if it already sat in a category.
"""
    )
