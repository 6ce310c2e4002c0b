"""The catalogue of `python -m dimerec reproduce`: each experiment's rows (RunSpec), its description, the metrics
its tables report and the equal tuning grid of `--tune`. The CLI and the app read it; runner produces its runs,
tables tabulates them."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

REPORTED = ("HR@10", "HR@20", "HR@50", "NDCG@10", "NDCG@20", "NDCG@50")
# issue 20: the ranking's other measures, from the same top-50 pass (dimerec/metrics.py); % except Gini (0..1)
# and AveragePopularity (training interactions per recommended item)
BEYOND_REPORTED = ("MRR@50", "ItemCoverage@50", "Gini@50", "AveragePopularity@50", "TailPercentage@50")
PERCENT = ("MRR@50", "ItemCoverage@50", "TailPercentage@50")


@dataclass
class RunSpec:
    label: str  # the row of the table
    model: str
    flags: list[str] = field(default_factory=list)
    role: str = "baseline"  # "ours" (compared), "baseline", "floor", "control" or "variant"
    run_name: str | None = None  # the run folder (default: from the label); equal names share runs
    serve_of: str | None = None  # evaluate this run's checkpoint (by run name) instead of training
    serve_overrides: dict = field(default_factory=dict)  # model-config fields changed for serving only
    budget_scale: int = 1  # trained for this many times the experiment's budget (clock and steps)
    patience: int | None = None  # early stopping's patience, in place of the budget's (its flag would lose to it)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", (self.run_name or self.label).lower()).strip("-")


OURS = RunSpec("DimeRec (ours)", "dimerec", ["--preset", "ours"], role="ours")
PAPER = RunSpec("DimeRec (paper)", "dimerec", ["--preset", "paper"], role="variant")
CONTROL = RunSpec("no-diffusion control", "dimerec-nodiff", role="control")
POP = RunSpec("MostPopular", "pop", role="floor")
COMIREC_SA = RunSpec("ComiRec-SA", "comirec-sa")


def dimerec_variant(label: str, flags: list[str], base: RunSpec = OURS, **kwargs) -> RunSpec:
    """A DimeRec row that changes `flags` from `base`; with no flags it is `base`'s own run."""
    kwargs.setdefault("run_name", None if flags else base.label)
    return RunSpec(label, "dimerec", [*base.flags, *flags], role="variant", **kwargs)


def ablations(base: RunSpec) -> list[RunSpec]:
    name = base.label
    return [dimerec_variant(f"{name} full", [], base),
            dimerec_variant(f"{name} w/o L_gem", ["--gem-weight", "0"], base),
            dimerec_variant(f"{name} w/o L_recon", ["--lambda-recon", "0"], base),
            dimerec_variant(f"{name} w/o L_ssm", ["--mu-ssm", "0"], base),
            dimerec_variant(f"{name} w/o GRW", ["--no-grw"], base)]


def sweep(symbol: str, flag: str, values: list, default) -> list[RunSpec]:
    # "trained with" keeps the folders apart from DIFFUSION's serving rows: "ours T 5" and "ours, t* = 5" were
    # both ours-t-5, a run trained with T = 5 and ours served from t* = 5
    return [dimerec_variant(f"{symbol} = {v}", [], run_name=OURS.label) if v == default else  # the default: ours
            dimerec_variant(f"{symbol} = {v}", [flag, str(v)], run_name=f"ours trained with {flag.lstrip('-')} {v}")
            for v in values]


def served(label: str, source: RunSpec, **overrides) -> RunSpec:
    """A row scoring `source`'s checkpoints with serving-only settings changed (no training)."""
    return RunSpec(label, source.model, role="variant", serve_of=source.label, serve_overrides=overrides)


# Issue 16: the levers on DimeRec's reverse chain, one table per hypothesis (the section reads DIFFUSION_GROUPS).
CFG = dimerec_variant("ours + CFG training (p = 0.15), w = 0", ["--p-uncond", "0.15"])
XATTN = dimerec_variant("ours, cross-attention denoiser", ["--denoiser", "cross-attention"])
SERVE_MEAN = RunSpec("DimeRec (ours, serve mean)", "dimerec", role="variant", serve_of=OURS.label,
                     serve_overrides={"serve": "mean"})
LONG_OURS = dimerec_variant("ours, trained 3x longer", [], run_name="ours, trained 3x longer", budget_scale=3,
                            patience=10)
LONG_CONTROL = RunSpec("no-diffusion control, trained 3x longer", "dimerec-nodiff", role="variant", budget_scale=3,
                       patience=10)
# H7: Table 3's SASRec GEM at SASRec's own tuned lr (Table 1's tuning: lr 0.005 with the sampled softmax stays at
# popularity on ML-1M) and the full softmax, for DimeRec and the control alike: the strongest encoder as the base.
# Trained on windows, every position of a window a target, as SASRec itself is by default: the SASRec GEM is causal,
# so each target's interests read exactly its own history, and an ML-1M epoch takes minutes instead of the ~36 that
# one SASRec pass per (history, next item) prefix takes on one thread (results/training-throughput.md)
STRONG_BASE = ["--gem", "sasrec", "--lr", "0.001", "--loss-kind", "ce", "--sampling", "windows"]
SASREC_OURS = dimerec_variant("ours on a SASRec GEM (lr 0.001, full softmax)", STRONG_BASE)
SASREC_CONTROL = RunSpec("control on a SASRec GEM (lr 0.001, full softmax)", "dimerec-nodiff", STRONG_BASE,
                         role="variant")
# each DimeRec variant that changes what the control shares (budget, GEM, loss) is judged against its own control
OWN_CONTROL = {LONG_OURS.label: LONG_CONTROL.label, SASREC_OURS.label: SASREC_CONTROL.label}

DIFFUSION_GROUPS: dict[str, list[RunSpec]] = {
    "References": [POP, CONTROL, OURS, SERVE_MEAN],
    "H1: classifier-free guidance (trained with p = 0.15, served with weight w)": [
        CFG, *(served(f"ours + CFG, w = {w}", CFG, guidance_weight=w) for w in (0.5, 1.0, 2.0, 4.0))],
    "H2: S samples merged as a predictive distribution (mixture at the model's L_ssm scale) or by max": [
        *(served(f"ours, S = {s}, max", OURS, serve_samples=s) for s in (4, 16)),
        *(served(f"ours, S = {s}, mixture", OURS, serve_samples=s, serve_merge="mixture") for s in (1, 4, 16))],
    "H3: a partial chain from the model's own guess (x̂0 at t = T) noised to t*": [
        *(served(f"ours, t* = {t}", OURS, serve_start=t) for t in (2, 5, 10, 15)),
        served("ours, t* = 5 from each interest, S = 4", OURS, serve_start=5, serve_guess="interests",
               serve_samples=4)],
    "H4: a denoiser that reads each interest (cross-attention over the K interests)": [XATTN],
    # early stopping ended ours at ~1,000 steps on planted (patience 3): is the denoiser merely undertrained?
    # Both sides get the same longer budget, so the pair stays an equal-budget comparison.
    "H5: training 3x longer (3x the budget's clock and steps, patience 10), DimeRec and the control alike": [
        LONG_OURS, LONG_CONTROL],
    "H7: a strong base (SASRec's encoder as the GEM, its tuned lr 0.001, the full softmax), DimeRec and the "
    "control alike": [SASREC_OURS, SASREC_CONTROL],
    "H1 + H2, H1 + H3: the strongest levers combined": [
        served("ours + CFG w = 4, S = 16, mixture", CFG, guidance_weight=4.0, serve_samples=16,
               serve_merge="mixture"),
        served("ours + CFG w = 4, t* = 5 from each interest, S = 4", CFG, guidance_weight=4.0, serve_start=5,
               serve_guess="interests", serve_samples=4)],
}

TABLE1 = [POP,
          RunSpec("SASRec", "sasrec"),
          RunSpec("GRU4Rec", "gru4rec"),
          RunSpec("MIND", "mind"),
          COMIREC_SA,
          RunSpec("ComiRec-DR", "comirec-dr"),
          RunSpec("Mult-VAE", "multvae"),
          RunSpec("DreamRec", "dreamrec"),
          RunSpec("DiffuRec", "diffurec"),
          OURS]

# issue 20: RecBole's protocol by name. SASRec and GRU4Rec with the settings of RecBole's published ML-1M benchmark
# (RUCAIBox/RecBole benchmark/hyper/sequential/*-ml-1m_seq.md: the best lr of its search, its model defaults, the
# full-softmax CE, d 64) where our flags reach them; tables.section_loo says which settings still differ
LOO = ["--protocol", "loo", "--loss-kind", "ce", "--max-len", "50", "--checkpoint-every", "1000"]  # validated each
# epoch as RecBole does (its stopping_step 10 is the patience `reproduce --patience 10` gives)
SASREC_RECBOLE = [*LOO, "--lr", "0.0005", "--n-layers", "2", "--n-heads", "2", "--dropout", "0.5", "--ffn-dim", "256",
                  "--ffn-activation", "gelu"]
GRU4REC_RECBOLE = [*LOO, "--lr", "0.005", "--n-layers", "2", "--dropout-embed", "0.3"]
LOO_ROWS = [RunSpec("MostPopular", "pop", ["--protocol", "loo"], role="floor", run_name="MostPopular loo"),
            RunSpec("SASRec (RecBole's ML-1M settings)", "sasrec", SASREC_RECBOLE),
            RunSpec("GRU4Rec (RecBole's ML-1M settings)", "gru4rec", GRU4REC_RECBOLE),
            # issue 28: the remaining differences from RecBole that a flag closes, each measured by a row
            RunSpec("SASRec (RecBole's ML-1M settings and blocks)", "sasrec",
                    [*SASREC_RECBOLE, "--block-style", "recbole"]),
            # RecBole trains on every prefix, a target seeing up to 50 items; a window of 10 targets lets each see 41 to
            # 50 (of 25: 26 to 50), at about 1.7 times the epoch's compute (prefixes, 1 target a pass: about 12 times)
            RunSpec("SASRec (RecBole's ML-1M settings, 10 targets a window)", "sasrec",
                    [*SASREC_RECBOLE, "--window-targets", "10"]),
            # RecBole's learning rate was chosen for batches of 4,096 targets: about 240 optimiser steps an epoch
            # where our 256 give about 4,200, so it gets 4 times the epochs (RecBole allows up to 500)
            RunSpec("GRU4Rec (RecBole's ML-1M settings, batches of 4,096)", "gru4rec",
                    [*GRU4REC_RECBOLE, "--batch-size", "4096"], budget_scale=4),
            # GRU4Rec gained 3.33 test HR@10 (seed 0) from RecBole's batch; SASRec's lr was chosen for it too
            RunSpec("SASRec (RecBole's ML-1M settings, batches of 4,096)", "sasrec",
                    [*SASREC_RECBOLE, "--batch-size", "4096"], budget_scale=4),
            # RecBole's GRU4Rec state is 128 wide, projected back to 64; measured in batches of 4,096, since in
            # batches of 256 RecBole's lr diverges with either width (seed 0: 128 wide fell at epoch 3, 64 at 10)
            RunSpec("GRU4Rec (RecBole's ML-1M settings, batches of 4,096 and width)", "gru4rec",
                    [*GRU4REC_RECBOLE, "--batch-size", "4096", "--gru-hidden", "128"], budget_scale=4)]

EXPERIMENTS: dict[str, list[RunSpec]] = {
    # issue 3: DimeRec as written, as decided (and served by its one-step mean), the control, its GEM alone
    "dimerec": [POP, COMIREC_SA, PAPER, OURS,
                RunSpec("DimeRec (ours, serve mean)", "dimerec", role="variant", serve_of=OURS.label,
                        serve_overrides={"serve": "mean"}),
                CONTROL],
    # the paper's Table 1: the seven baselines and DimeRec, MostPopular as the floor
    "table1": TABLE1,
    # Table 2 reads the Table 1 runs: linear probing of item embeddings, categories in the top 100
    "table2": TABLE1,
    # Table 3: the guidance extractor swapped
    "table3": [dimerec_variant("GEM = SASRec", ["--gem", "sasrec"]),
               dimerec_variant("GEM = MLP", ["--gem", "mlp"]),
               dimerec_variant("GEM = ComiRec-DR", ["--gem", "comirec-dr"]),
               dimerec_variant("GEM = ComiRec-SA", []),
               CONTROL],
    # Table 4: each loss and the geodesic random walk removed, for both presets, the control beside;
    # Fig. 3: linear probing of the item table after the paper's cumulative ablations (variants 1-4)
    "table4": [*ablations(OURS), *ablations(PAPER), CONTROL,
               dimerec_variant("Fig. 3 variant 2: w/o L_gem, L_recon", ["--gem-weight", "0", "--lambda-recon", "0"]),
               dimerec_variant("Fig. 3 variant 3: w/o L_gem, L_recon, GRW",
                               ["--gem-weight", "0", "--lambda-recon", "0", "--no-grw"]),
               dimerec_variant("Fig. 3 variant 4: w/o L_gem, L_ssm", ["--gem-weight", "0", "--mu-ssm", "0"])],
    # Fig. 4: the loss curves with and without GRW (Table 4's runs)
    "fig4": [dimerec_variant("with GRW", []),
             dimerec_variant("without GRW", ["--no-grw"], run_name="DimeRec (ours) w/o GRW")],  # Table 4's runs
    # Fig. 5: HR@50 of x̂0 at every reverse step (the `dimerec` experiment's runs)
    "fig5": [PAPER, OURS],
    # Tables 5, 7, 8: sensitivity to T, λ and μ
    "table5": sweep("T", "--T", [5, 10, 20, 50, 100], 20),
    "table7": sweep("λ", "--lambda-recon", [0.01, 0.1, 1, 10], 0.1),
    "table8": sweep("μ", "--mu-ssm", [0.1, 1, 10, 100], 1),
    # issue 16: can the reverse chain earn its place? (results/DIFFUSION.md explains the tables)
    "diffusion": [spec for group in DIFFUSION_GROUPS.values() for spec in group],
    # issue 20: Table 1's sanity check under RecBole's leave-one-out, beside the figures RecBole publishes
    "loo": LOO_ROWS,
}

# experiments where models of different papers meet: their tables say how each model's settings were chosen
COMPARES_PAPERS = {"table1", "table2"}

DESCRIPTIONS = {
    "dimerec": "DimeRec presets, its one-step-mean serving, the no-diffusion control, ComiRec-SA, MostPopular",
    "table1": "all eight models and MostPopular (Table 1)",
    "table2": "Table 1's runs: linear probing of item embeddings on categories, distinct categories in the top 100",
    "table3": "DimeRec with its GEM swapped: SASRec, MLP, ComiRec-DR, ComiRec-SA",
    "table4": "ablations: without L_gem, L_recon, L_ssm or GRW, for both presets, the control; "
              "Fig. 3's linear probing of the item table after the cumulative ablations",
    "fig4": "the three loss curves with and without the geodesic random walk",
    "fig5": "HR@50 of the intermediate x̂0 at every reverse step, paper and ours",
    "table5": "diffusion steps T in {5, 10, 20, 50, 100}",
    "table7": "λ (weight of L_recon) in {0.01, 0.1, 1, 10}",
    "table8": "μ (weight of L_ssm) in {0.1, 1, 10, 100}",
    "loo": "SASRec and GRU4Rec under RecBole's leave-one-out protocol with its published ML-1M settings, beside "
           "RecBole's published figures",
    "diffusion": "levers on DimeRec's reverse chain (guidance, samples, partial chains, denoiser), the control "
                 "and the one-step mean beside: per-step curves, serving cost, chain angles",
}

# Equal tuning for Table 1: the learning rate, the softmax (issue 28: the sampled one of the DimeRec paper, or the
# full softmax over every item, `--loss-kind ce`, which won validation for five of six softmax models at their
# chosen settings), and at most one more of each model's own settings: at most 8 runs a model.
SOFTMAX = ["ssm", "ce"]
TUNING: dict[str, dict[str, list]] = {
    # SASRec: the full softmax or the official BCE on every position, and its dropout (RecBole's maintainers find
    # 0.2 beats 0.5 on ML-1M, RUCAIBox/RecBole#1289). The paper's sampled softmax is left out: on ML-1M it stayed
    # at popularity level with lr 0.005 and last of the four with 0.001 (results/table1_ml-1m_tuning.csv, 3,000 steps)
    "sasrec": {"--lr": [0.001, 0.005], "--loss-kind": ["ce", "bce-all-positions"], "--dropout": [0.2, 0.5]},
    "gru4rec": {"--lr": [0.001, 0.005], "--loss-kind": SOFTMAX, "--dropout-hidden": [0.0, 0.25]},
    "mind": {"--lr": [0.001, 0.005], "--loss-kind": SOFTMAX, "--routing-iterations": [1, 3]},
    "comirec-sa": {"--lr": [0.001, 0.005], "--loss-kind": SOFTMAX, "--n-negatives": [10, 50]},
    "comirec-dr": {"--lr": [0.001, 0.005], "--loss-kind": SOFTMAX, "--routing-iterations": [1, 3]},
    # β = step / --total-anneal-steps (200,000) reaches the cap 0.2 only at step 40,000 (about 13 epochs of ML-1M's
    # prefixes) and 1.0 at 200,000: the two caps train the same model until then; kept so the committed tables
    # reproduce
    "multvae": {"--lr": [0.001, 0.005], "--anneal-cap": [0.2, 1.0]},
    "dreamrec": {"--lr": [0.001, 0.005], "--guidance-weight": [0.0, 2.0], "--retrieval": ["dot", "l2"]},
    "diffurec": {"--lr": [0.001, 0.005], "--dropout": [0.1, 0.3]},
    "dimerec": {"--lr": [0.001, 0.005], "--loss-kind": SOFTMAX, "--lambda-recon": [0.1, 1.0]},
}
# a setting that does nothing under another one: the grid trains one run where the inert values would repeat it
INERT_UNDER = {("--loss-kind", "ce"): {"--n-negatives"}}  # the full softmax draws no negatives


def grid(model: str) -> list[list[str]]:
    """Each run of `model`'s tuning grid as flags; a combination that differs from an earlier one only in a setting
    it leaves inert (INERT_UNDER) is left out."""
    space = TUNING.get(model, {})
    runs, seen = [], set()
    for values in itertools.product(*space.values()):
        chosen = dict(zip(space, values))
        inert = set().union(*(names for (flag, value), names in INERT_UNDER.items() if chosen.get(flag) == value))
        key = tuple((flag, value) for flag, value in chosen.items() if flag not in inert)
        if key not in seen:
            seen.add(key)
            runs.append([item for pair in chosen.items() for item in map(str, pair)])
    return runs
