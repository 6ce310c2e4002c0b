"""results/DIFFUSION.md is its template filled in from the diffusion tables, and its sentences follow the numbers."""
import re
from pathlib import Path

import pandas as pd

from dimerec.diffusion_report import TEMPLATE, DiffusionTable, block_levers, block_summary, render
from dimerec.reproduce.experiments import CONTROL, OURS, SERVE_MEAN

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

