"""Steps: how good the intermediate guess x̂0 is at every reverse step (the paper's Fig. 5), for every run."""
import pandas as pd
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

run = ui.page_setup("Steps",
                    "At each reverse step the denoiser guesses x_0; retrieving with that guess gives a recommendation "
                    "at every step. These curves show its HR@50 and NDCG@50 on the validation users, step by step, "
                    "for every run that recorded them (step_metrics.json, written by every model that denoises: "
                    "DimeRec, DreamRec, DiffuRec).", need_user=False)
available = runs.discover_runs()
curves, run_ids, paths, skipped = {}, {}, {}, []
for run_id, path in available.items():
    sm = runs.read_step_metrics(path)
    if sm is None:
        if (path / "step_metrics.json").exists():
            skipped.append(f"{run_id} (step_metrics.json is unreadable)")
        continue
    label = run_id.split("/", 1)[1] + ("" if run_id.startswith("runs/") else " (built-in)")
    curves[label], run_ids[label], paths[label] = sm, run_id, path

if not curves:
    st.info("No run has step_metrics.json yet: DimeRec runs write it at the end of training "
            "(`python -m dimerec train --model dimerec …`).")
    st.stop()

# only runs on the sidebar run's data (the same items, sequences and split: a planted world of another size is
# other data): the dotted references belong to that data, and a chain on other data drawn against them would mislead
same_data = [label for label in curves if runs.on_same_data(run, paths[label])]
others = len(curves) - len(same_data)
# shown at first: the built-in runs and the sidebar's run, not every run found (a runs/ folder can hold dozens)
first_shown = [label for label in same_data if run_ids[label].startswith("default/") or run_ids[label] == run.id]
shown = st.multiselect("Runs", same_data, default=first_shown, key="steps_runs",
                       help=f"Runs on the sidebar run's data ({run.dataset}, its split): the built-in runs and the "
                            f"sidebar's run at first, any other from this list; "
                            f"{others} run(s) on other data are left out: open one in the sidebar to see its own.")
picked = {k: curves[k] for k in shown}
if not picked:
    st.info("Pick one or more runs above.")
    st.stop()
first_id = run_ids[next(iter(picked))]
first_run = runs.load_run(first_id)
references = runs.reference_levels(first_id, first_run.stamp)
top = runs.ceiling(first_id, first_run.stamp)
if top is not None:  # drawn as a line with the references, said apart in the verdicts
    references = {**references, runs.ORACLE: top}
tabs = st.tabs(["HR@50", "NDCG@50"])
for tab, metric in zip(tabs, ("HR@50", "NDCG@50")):
    with tab:
        lines = {name: level[metric] for name, level in references.items() if metric in level}
        colors = figures.run_colors([runs.read_config(available[run_ids[label]]) for label in picked])
        ui.chart(figures.steps_figure(picked, metric, references=lines, colors=colors), key=f"steps_{metric}")
st.caption("Steps are numbered as on every page: step k shows the guess x̂0 made from x_t at t = T − k, so step 0 "
           "is the guess from pure noise x_T and ★ (step T) the final x_0 that serving uses (its value in "
           "step_metrics.json). "
           f"Dotted lines: references on the validation users of {next(iter(picked))} — popularity computed on its "
           "rows, the no-diffusion control and the no-GRW run from their own metrics.json.")
# The verdict of each picked run, from its own files: does the guess improve along the chain?
for label, sm in picked.items():
    if not sm["steps"]:
        continue
    stamp = runs.load_run(run_ids[label]).stamp
    refs = runs.reference_levels(run_ids[label], stamp)
    ceiling = (runs.ceiling(run_ids[label], stamp) or {}).get("HR@50")
    verdict = explore.chain_verdict(sm, {name: level["HR@50"] for name, level in refs.items()}, ceiling=ceiling)
    below = runs.below_popularity(runs.load_run(run_ids[label]))
    warning = (f"**Below popularity on the test users** ({ui.pct(below[0])} against MostPopular's "
               f"{ui.pct(below[1])}). " if below else "")
    st.markdown(f"**{label}** — {warning}{verdict['sentence']}")
rows = [{"run": k, "dataset": sm.get("dataset"), "protocol": sm.get("protocol"), "T": sm.get("T"),
         "HR@50 at step 0": sm["steps"][0]["HR@50"], "best HR@50": max(s["HR@50"] for s in sm["steps"]),
         "best at step": explore.chain_verdict(sm)["best_step"],
         "final HR@50 (step T)": (sm.get("final") or {}).get("HR@50")} for k, sm in picked.items() if sm["steps"]]
shares = ("HR@50 at step 0", "best HR@50", "final HR@50 (step T)")
table = pd.DataFrame(rows)
table[list(shares)] = table[list(shares)].astype(float) * 100  # in percent, one decimal, as every number of the app
st.dataframe(table, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.1f%%") for c in shares})
for message in skipped:
    st.warning(f"Skipped {message}.")
if runs.has_lesson(run):
    st.page_link("app_pages/sample_or_mean.py", label="Why does the guess fall along the chain? Sample or mean?",
                 icon=":material/casino:")
