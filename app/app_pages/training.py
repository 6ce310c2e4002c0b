"""Training: the three loss terms over training, with and without the geodesic random walk (the paper's Fig. 4)."""

import plotly.graph_objects as go
import streamlit as st

from app import figures, runs, ui
from dimerec import explore

run = ui.page_setup("Training",
                    "DimeRec minimises L = L_gem + λ·L_recon + μ·L_ssm. Here each term is followed over training, "
                    "for two runs that differ in one thing: the geodesic random walk (GRW) that keeps the noise on "
                    "the sphere, or its Euclidean ablation (`--no-grw`).", need_user=False)
available = runs.discover_runs()
with_losses = [r for r, p in available.items() if (p / "losses.csv").is_file()]


def _config(run_id: str) -> dict:
    return runs.read_config(available[run_id])


def counterpart(run_id: str) -> str | None:
    """A run on the same dataset and model that differs in GRW."""
    mine = _config(run_id)
    grw = (mine.get("model_config") or {}).get("grw", True)
    for other in with_losses:
        c = _config(other)
        if other != run_id and c.get("model") == mine.get("model") and c.get("dataset") == mine.get("dataset") \
                and (c.get("model_config") or {}).get("grw", True) != grw:
            return other
    return None


if not with_losses:
    st.info("No run has a losses.csv yet: train one with `python -m dimerec train … --out runs/NAME`.")
    st.stop()
default = [r for r in (run.id, counterpart(run.id)) if r in with_losses]
if run.id not in with_losses:
    st.info(f"The selected run ({run.id}) has no losses.csv; showing the built-in runs instead.")
    default = [r for r in (runs.DEFAULT_RUN_ID, counterpart(runs.DEFAULT_RUN_ID)) if r in with_losses]
chosen = st.multiselect("Runs to compare", with_losses, default=default, key=f"training_runs_{run.id}",
                        format_func=lambda r: runs.run_label(r, available[r]), max_selections=4,
                        help="By default the selected run and its counterpart with the GRW switched.")
window = st.slider("Smoothing (rolling mean over steps)", 1, 200, 25, key="training_window")
if not chosen:
    st.info("Pick one or more runs above.")
    st.stop()

frames, problems = {}, []
for r in list(chosen):
    try:
        frame = runs.read_losses(available[r])
    except runs.RunError as err:
        problems.append(str(err))
        chosen.remove(r)
        continue
    grw = (_config(r).get("model_config") or {}).get("grw", True)
    tag = " (no GRW)" if grw is False else " (GRW)" if _config(r).get("model") == "dimerec" else ""
    label = r.split("/", 1)[1] + tag
    frames[label] = frame
for message in problems:
    st.error(message)
if not frames:
    st.stop()

terms = [t for t in ("L_gem", "L_recon", "L_ssm") if any(t in f.columns for f in frames.values())]
if not terms:
    terms = [c for c in next(iter(frames.values())).columns if c not in ("step", "epoch")][:3]
colors = figures.run_colors([_config(r) for r in chosen])  # no-GRW: the same colour as on every page
ui.chart(figures.loss_figure(frames, terms, window, colors=colors), key="training_losses")
st.caption("L_gem: the extractor's sampled softmax (Eq. 19). L_recon: the squared distance between x̂0 and the "
           "target x_0 (Eq. 21) — with GRW both are on the unit sphere, without it x_0 is the raw embedding, so the "
           "scales differ. L_ssm: the sampled softmax of x̂0 (Eq. 22). The no-diffusion control has no L_recon.")

# What switching GRW off did here, from the two runs' own files (metrics.json and losses.csv)
pair = {runs.is_no_grw(_config(r)): r for r in chosen if _config(r).get("model") == "dimerec"}
if True in pair and False in pair:
    def _metrics(r: str) -> dict:
        return runs.read_metrics(available[r]).get("test") or {}

    def _recon(r: str) -> tuple[float, float] | None:
        frame = frames[labels_of[r]]
        recon = explore.loss_summary(frame, ["L_recon"])
        return (recon["first 10%"].item(), recon["last 10%"].item()) if len(recon) else None

    labels_of = dict(zip(chosen, frames))
    sentence = explore.grw_comparison(_metrics(pair[False]), _metrics(pair[True]), _recon(pair[False]),
                                      _recon(pair[True]))
    if sentence:
        st.markdown(f"**What the no-GRW run shows here.** {sentence} (L_recon: mean of the first and last tenth of "
                    f"the logged steps; HR@50 on the test users, from each run's metrics.json.)")

valid = go.Figure()
labels = dict(zip(chosen, frames))  # the loss figure's label of each run, in the same order and colours
for j, (r, label) in enumerate(labels.items()):
    v = runs.read_valid(available[r])
    if v is not None and "HR@50" in v.columns:
        valid.add_trace(go.Scatter(x=v["step"], y=v["HR@50"], mode="lines+markers", name=label,
                                   line=dict(color=colors[j], width=2,
                                             dash=["solid", "dash", "dot", "dashdot"][j % 4])))
if valid.data:
    st.subheader("Validation HR@50 during training")
    valid.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="training step",
                        yaxis_title="HR@50 (validation)", yaxis_tickformat=".0%",
                        legend=dict(orientation="h", y=-0.3, x=0))
    ui.chart(valid, key="training_valid")
