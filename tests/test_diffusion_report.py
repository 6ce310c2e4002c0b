"""results/DIFFUSION.md is its template filled in from the diffusion tables, and its sentences follow the numbers."""
import re
from pathlib import Path

import pandas as pd

from dimerec.diffusion_report import (EARLIER, TEMPLATE, DiffusionTable, block_budget, block_headline,
                                      block_levers, block_mean, block_summary, render)
from dimerec.reproduce.experiments import (CONTROL, LONG_CONTROL, LONG_OURS, OURS, SASREC_CONTROL, SASREC_OURS,
                                           SERVE_MEAN)

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_the_committed_page_is_its_template_filled_in_from_the_committed_tables():
    """A number typed into DIFFUSION.md, or a table regenerated without `python -m dimerec claims`, fails here."""
    assert (RESULTS / "DIFFUSION.md").read_text() == render((RESULTS / TEMPLATE).read_text(), RESULTS)


def test_the_templates_prose_states_no_measured_number():
    prose = [line for line in (RESULTS / TEMPLATE).read_text().splitlines() if not line.startswith("|")]
    typed = [line for line in prose if re.search(r"\d+\.\d+|\d+(\.\d+)? ?%", re.sub(r"`[^`]*`", "", line))]
    assert not typed, typed


def table(rows: dict[str, tuple]) -> DiffusionTable:
    """A diffusion table of (test HR@50, valid HR@50, chain first, chain last) per variant."""
    frame = pd.DataFrame([{"model": name, "HR@50": test, "HR@50 std": 1.0, "valid HR@50": valid,
                           "chain first": first, "chain last": last}
                          for name, (test, valid, first, last) in rows.items()]).set_index("model")
    return DiffusionTable("toy", frame, "")


def test_each_levers_sentence_says_what_its_numbers_say():
    nan = float("nan")
    base = {CONTROL.label: (60.0, 61.0, nan, nan), OURS.label: (40.0, 41.0, 50.0, 41.0),
            SERVE_MEAN.label: (50.0, 50.0, nan, nan)}
    falling = table({**base, "ours, cross-attention denoiser": (45.0, 46.0, 50.0, 46.0)})
    line = block_levers(falling)
    assert "**H4**" in line and "+5.00 points from the default chain (40.00)" in line
    assert "closing 50% of the distance" in line and "below the one-step mean (50.00)" in line
    assert "its chain falls from 50.00" in line
    rising = table({**base, "ours, cross-attention denoiser": (55.0, 56.0, 48.0, 56.0)})
    line = block_levers(rising)
    assert "above the one-step mean" in line and "its chain rises from 48.00" in line and "closing" not in line
    assert "**ours, cross-attention denoiser**" in block_summary(rising)  # the best chain on validation, in bold


def test_the_converged_table_is_set_beside_the_one_it_replaced_and_says_which_way_the_gap_moved(tmp_path):
    """The `budget` and `headline` blocks: each variant both tables hold, and the gap to the control widening or
    narrowing as the numbers say (not as the prose expects)."""
    nan = float("nan")
    t3 = "ours, t* = 2"

    def write(folder: Path, budget: str, rows: dict[str, tuple]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        table(rows).rows.reset_index().to_csv(folder / "diffusion_toy.csv", index=False)
        (folder / "diffusion_toy.md").write_text(f"Test split; each run trained for {budget}, selected on valid.\n")

    earlier = {CONTROL.label: (40.0, 40.0, nan, nan), OURS.label: (20.0, 20.0, 30.0, 20.0),
               SERVE_MEAN.label: (30.0, 30.0, nan, nan), t3: (25.0, 25.0, 26.0, 25.0)}
    write(tmp_path / EARLIER, "3000 steps", earlier)
    widened = {CONTROL.label: (50.0, 50.0, nan, nan), OURS.label: (22.0, 22.0, 35.0, 22.0),
               SERVE_MEAN.label: (41.0, 41.0, nan, nan), t3: (30.0, 30.0, 31.0, 30.0)}
    write(tmp_path, "at most 50 epochs", widened)
    converged = DiffusionTable.read(tmp_path, "toy")
    page = block_budget(converged)
    assert "| ours, t* = 2 | 25.00 ± 1.00 | 30.00 ± 1.00 | 15.00 | 20.00 |" in page
    assert "DimeRec (ours), 20.00 → 28.00 points (widens)" in page and "4 of the 4 trained variants" in page
    assert "DimeRec (ours, serve mean), 10.00 → 9.00 points (narrows)" in page
    headline = block_headline(converged)
    assert "20.00 points below" in headline and "instead of for 3000 steps" in headline
    assert "15.00 → 20.00 points (widens)" in headline
    narrowed = {**widened, t3: (38.0, 38.0, 39.0, 38.0)}
    write(tmp_path, "at most 50 epochs", narrowed)
    assert "15.00 → 12.00 points (narrows)" in block_headline(DiffusionTable.read(tmp_path, "toy"))
    (tmp_path / EARLIER / "diffusion_toy.csv").unlink()  # none kept: the page says so, and the headline is short
    assert block_budget(DiffusionTable.read(tmp_path, "toy")).startswith("(no earlier table kept")
    assert "convergence" not in block_headline(DiffusionTable.read(tmp_path, "toy"))


def test_the_mean_block_sets_each_pairs_first_step_beside_its_own_control():
    """`mean`: the one-step mean's gap to the control at the budget, then each own-control pair's (its first step
    is its mean), narrowing or widening as the numbers say."""
    nan = float("nan")
    toy = table({CONTROL.label: (60.0, 61.0, nan, nan), OURS.label: (40.0, 41.0, 50.0, 41.0),
                 SERVE_MEAN.label: (50.0, 50.0, nan, nan),
                 LONG_OURS.label: (44.0, 44.0, 55.0, 44.0), LONG_CONTROL.label: (61.0, 62.0, nan, nan),
                 SASREC_OURS.label: (40.0, 40.0, 48.0, 40.0), SASREC_CONTROL.label: (65.0, 66.0, nan, nan)})
    text = block_mean(toy)
    assert text.startswith("On toy (validation HR@50), the one-step mean scores 50.00 against the control's 61.00, "
                           "11.00 points under")
    assert f"{LONG_OURS.label}: its mean 55.00 against its control's 62.00, 7.00 under (the gap narrows, closing " \
           f"36% of it)" in text
    assert f"{SASREC_OURS.label}: its mean 48.00 against its control's 66.00, 18.00 under (the gap widens)" in text


def test_the_one_step_mean_is_the_chains_first_step_in_the_committed_tables():
    """The `mean` block reads a pair's first step as its mean: DimeRec served by its one-step mean (one start)
    scores on validation exactly what its chain's first step scores."""
    for dataset in ("ml-1m", "planted"):
        committed = DiffusionTable.read(RESULTS, dataset)
        assert abs(committed.value(SERVE_MEAN.label, "valid HR@50") - committed.value(OURS.label, "chain first")) \
            < 1e-6, dataset
