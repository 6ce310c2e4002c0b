"""Sample or mean? Why the reverse chain ranks worse than the denoiser's first guess: one chain ends at one sample,
the first step's x̂0 is the mean of them all. Every number is computed from the selected run (runs.lesson_scores,
runs.lesson_lists) or by dimerec.explore.odds_oracle."""
import pandas as pd
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

ctx = ui.page_setup("Sample or mean?",
                    "The reverse chain ends at ONE sample of where the user might go next. The denoiser's first "
                    "guess x̂0, made from pure noise, is the MEAN of all those places. Which ranks better?",
                    compact=True)
run = ctx.run
if not runs.has_lesson(run):
    st.info(f"This lesson needs a run whose chain can be served both ways, one sample or the mean (DimeRec); "
            f"{run.model_name} cannot. Pick a DimeRec run in the sidebar.")
    st.stop()

scores = runs.lesson_scores(run.id, run.stamp)
counts = [int(s) for s in scores["mixture"]]
left, right = st.columns([1.1, 1])
with left:
    S = st.select_slider("Samples S in the mixture", counts, value=counts[0], key="lesson_samples",
                         help="S chains for the user, their ends merged as a predictive distribution "
                              "(--serve-samples S --serve-merge mixture); S = 1 is the chain as served.")
    mean_hr, mix_hr = scores["mean"]["HR@50"], scores["mixture"][str(S)]["HR@50"]
    chain_hr = scores["mixture"][str(counts[0])]["HR@50"]
    st.markdown(f"**HR@50 on {scores['max_rows'] or 'all'} validation rows**: one chain **{ui.pct(chain_hr)}**, "
                f"the mean **{ui.pct(mean_hr)}**, the mixture of S = {S} **{ui.pct(mix_hr)}**.")
    ui.chart(figures.lesson_figure(scores, S, height=250), key="lesson_curve")
with right:
    mean_top, mix_top = runs.lesson_lists(run.id, run.stamp, ctx.hist, S, 0)

    def marked(items) -> list[str]:
        return [("★ " if i == ctx.next_item else "") + run.short_title(i) for i in items]

    st.markdown(f"**User {ctx.user}: the top 10** (★ the item they clicked next)")
    st.dataframe(pd.DataFrame({"#": range(1, 11), "mean x̂0": marked(mean_top), f"mixture, S = {S}": marked(mix_top)}),
                 hide_index=True, column_config={"#": st.column_config.NumberColumn("#", width=30)})
    shared = len(set(mean_top.tolist()) & set(mix_top.tolist()))
    st.caption(f"The two lists share {shared} of 10 items.")

oracle = explore.odds_oracle()
words, picture = st.columns([1, 1.1])
last_hr = scores["mixture"][str(counts[-1])]["HR@50"]
if last_hr - chain_hr >= 0.01:
    merging = (f"Merging S samples rebuilds the average, so the mixture climbs towards the mean as S grows "
               f"({ui.pct(last_hr)} at S = {counts[-1]}): more samples approximate the mean.")
else:
    merging = (f"Here merging samples does not help ({ui.pct(last_hr)} at S = {counts[-1]}): this run's chains end "
               f"at nearly the same place whatever their start, so S of them are one sample S times.")
best_s = max(counts, key=lambda c: scores["mixture"][str(c)]["HR@50"])
best_hr = scores["mixture"][str(best_s)]["HR@50"]
gap = best_hr - mean_hr
verdict = ("below the mean" if gap < -0.005 else "level with the mean (within a point)" if gap <= 0.01
           else "above the mean")
with words:
    st.markdown(
        "**Why.** The denoiser is trained with a squared error, so its first guess x̂0 is the *average* of every "
        "place the user might go next: ranking by it puts the likely items of every interest on top. A chain "
        "that works as designed ends at *one* of those places, and its top 50 is that place's neighbourhood. "
        f"When the next click is uncertain, one sample covers one possibility where the mean covers all: here "
        f"one chain scores {ui.pct(chain_hr)} against the mean's {ui.pct(mean_hr)}. {merging} The best mixture "
        f"(S = {best_s}, {ui.pct(best_hr)}) is {verdict}.")
with picture:
    ui.chart(figures.oracle_figure(oracle), key="lesson_oracle")
    most = list(oracle["samples"])[-1]
    st.caption(f"An oracle that knows only the odds (notebook 02): one sample is right "
               f"{ui.pct(oracle['one sample exact'])} of the time (Σ p²), the mean {ui.pct(oracle['mean'])} (the "
               f"likeliest item); the most frequent of {most} samples {ui.pct(oracle['samples'][most])}. 20,000 "
               f"simulated users, seeded.")
