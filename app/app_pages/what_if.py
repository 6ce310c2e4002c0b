"""What if: edit a user's history and watch the interests, the reverse samples and the recommendations change."""
import numpy as np
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

ctx = ui.page_setup("What if",
                    "Change the history — add items, remove items — and the model reads it again at once: new "
                    "interests, new reverse samples, new recommendations. Try adding a few items of a category the "
                    "user never touched.")
run = ctx.run

if st.session_state.get("whatif_for") != (run.id, ctx.user):
    st.session_state.whatif_for = (run.id, ctx.user)
    st.session_state.whatif_hist = list(ctx.hist)
history: list[int] = st.session_state.whatif_hist
popular = runs.popularity(run.id, run.stamp)


def add_item() -> None:
    item = st.session_state.get("whatif_item")
    if item is not None:
        st.session_state.whatif_hist = (st.session_state.whatif_hist + [int(item)])[-run.data.max_len:]


def add_category() -> None:
    c = run.categories.index(st.session_state.whatif_category)
    items = np.flatnonzero(run.item_category == c)
    items = items[np.argsort(-popular[items], kind="stable")][:st.session_state.whatif_count]
    st.session_state.whatif_hist = (st.session_state.whatif_hist + [int(i) for i in items])[-run.data.max_len:]


def remove_selected() -> None:
    drop = set(st.session_state.get("whatif_remove") or [])
    st.session_state.whatif_hist = [item for pos, item in enumerate(st.session_state.whatif_hist) if pos not in drop]
    st.session_state.whatif_remove = []


def reset() -> None:
    st.session_state.whatif_hist = list(ctx.hist)
    st.session_state.whatif_remove = []


add, remove = st.columns(2)
with add:
    st.markdown("**Add**")
    a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
    a1.selectbox("An item (type to search)", range(run.data.n_items), key="whatif_item",
                 format_func=run.title, index=None, placeholder="Choose an item…")
    a2.button("Add", key="whatif_add", on_click=add_item, use_container_width=True)
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    c1.selectbox("Or the most popular items of a category", run.categories, key="whatif_category")
    c2.number_input("How many", 1, 10, 3, key="whatif_count")
    c3.button("Add", key="whatif_add_category", on_click=add_category, use_container_width=True)
with remove:
    st.markdown("**Remove**")
    r1, r2 = st.columns([3, 1], vertical_alignment="bottom")
    r1.multiselect("History items to remove", range(len(history)), key="whatif_remove",
                   format_func=lambda pos: f"{pos + 1}. {run.title(history[pos])}", placeholder="Choose items…")
    r2.button("Remove", key="whatif_remove_button", on_click=remove_selected, use_container_width=True)
    st.button("↺ Back to the user's real history", key="whatif_reset", on_click=reset)

changed = history != list(ctx.hist)
if not history:
    st.warning("The history is empty: add at least one item (or go back to the user's real history).")
    st.stop()
st.markdown(f"**The history the model reads now** ({len(history)} items, oldest first; "
            f"{'edited' if changed else 'not edited yet'}; the model keeps the last {run.data.max_len})")
ui.chart(figures.history_figure(run, np.array(history), ctx.next_item, height=230), key="whatif_history")

before = runs.user_view(run.id, run.stamp, ctx.hist, runs.DEFAULT_SAMPLES, 0)
after = runs.user_view(run.id, run.stamp, tuple(history), runs.DEFAULT_SAMPLES, 0)

st.subheader("Recommendations")
if not changed:
    st.info("Nothing is edited yet, so both sides agree: add or remove items above and watch the right side change.")
effect = explore.edit_effect(before.interest_top, after.interest_top, before.top[:10], after.top[:10],
                             run.item_category, run.categories)
# the one-step mean's list beside the served one, when the edit moved an interest the served list did not follow:
# one sample from a random start can land on any interest; the mean of the first step's guesses weighs them all
serves_mean = run.serving.serve == "mean"  # then the served list is the mean's already
mean = None
if changed and effect["missed"] and run.has_diffusion and not serves_mean:
    mean = runs.mean_list(run.id, run.stamp, tuple(history), 0)
    effect = explore.edit_effect(before.interest_top, after.interest_top, before.top[:10], after.top[:10],
                                 run.item_category, run.categories, mean_after=mean)
columns = st.columns(3 if mean is not None else 2)
compact = mean is not None
before_top = set(before.top[:10].tolist())
frame = ui.items_frame(run, after.top[:10], ctx.next_item)
frame.insert(1, "new?", ["new" if i not in before_top else "" for i in after.top[:10]])
columns[0].markdown("**Before** (the real history)")
ui.show_items(ui.items_frame(run, before.top[:10], ctx.next_item), columns[0], compact=compact)
columns[1].markdown("**After**, as the run serves it (*new*: not in the top 10 before)")
ui.show_items(frame, columns[1], compact=compact)
if mean is not None:
    mean_frame = ui.items_frame(run, mean, ctx.next_item)
    mean_frame.insert(1, "new?", ["new" if i not in before_top else "" for i in mean])
    columns[2].markdown("**After**, by the one-step mean (the first step's x̂0, averaged over 64 random starts)")
    ui.show_items(mean_frame, columns[2], compact=True)

if changed:  # say what happened, from the numbers in the tables above and the category mixes below
    st.markdown("**What the edit did.** " + effect["sentence"]
                + " GEM reads the whole edited history again, so every interest can change, not only the one the "
                  "new items fit.")

st.subheader("Interests: category mix of each interest's 20 nearest items")
left, right = st.columns(2)
left.markdown("**Before**")
ui.chart(figures.category_mix_figure(run, before.interest_top), key="whatif_mix_before", container=left)
right.markdown("**After**")
ui.chart(figures.category_mix_figure(run, after.interest_top), key="whatif_mix_after", container=right)

st.subheader("Reverse samples for the edited history")
# the globe is drawn on request: a 3-D scene took half of this page's load (2.5 of 5 s in headless Chromium on a
# loaded machine), and the lists and the sentence above are what the page is for
if st.toggle("Show them on the globe", key="whatif_globe",
             help="The edited history, its interests and its reverse samples on the sphere, as on the Denoising "
                  "page (a 3-D figure: a few seconds to draw)."):
    if after.samples is None:
        st.info(f"This run ({run.model_name}) has no diffusion; the sphere shows the edited history and its "
                f"interests.")
    ui.chart(figures.sphere_figure(run, after, ctx.next_item, after.samples.T if after.samples else None),
             key="whatif_sphere")
