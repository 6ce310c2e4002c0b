"""The notebooks run top to bottom in fast mode (DIMEREC_FAST=1), and each asserts what it shows.

Every notebook trains on a 400-user planted world for a few epochs and checks its own claims inside
(ComiRec-SA's interests match the planted truth; an oracle reverse process ends at x0; trained DimeRec
beats popularity; ...), so a failing cell fails the test with the cell's traceback. The kernel runs from
notebooks/, as `jupyter nbconvert --execute` does, and writes its runs into a temporary $DIMEREC_RUNS
shared by the four notebooks, so notebook 4 reads the runs of notebooks 1-3.
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 300  # per cell; the whole fast set takes about two minutes on one core


def test_the_four_notebooks_exist_and_the_readme_describes_each():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"], NOTEBOOKS
    rows = [line for line in (NOTEBOOK_DIR / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    """Outputs are produced by the command in notebooks/README.md, never committed (reviewable diffs)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, path
    assert all(not c.outputs and c.execution_count is None and not c.metadata for c in code), \
        f"{path.name}: strip its outputs (notebooks/README.md)"
    assert path.stat().st_size < 200_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_dimerec_and_defines_no_model(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from dimerec" in source
    for forbidden in ("nn.Module", "nn.Linear", "torch.optim", ".backward("):
        assert forbidden not in source, f"{path.name} defines or trains a model by hand ({forbidden}); use dimerec"


def check_run_files(run: Path, notebook: str) -> None:
    """What a notebook's run directory holds, read: config.json names the notebook and is the config inside
    best.pt; losses.csv has one finite row per step; metrics.json's valid HR@50 is the best row of valid.csv."""
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["command"].startswith(f"notebooks/{notebook}")
    assert json.loads(torch.load(run / "best.pt", weights_only=True)["config"]) == config
    if metrics["steps"]:  # MostPopular trains no step and logs nothing
        losses = pd.read_csv(run / "losses.csv")
        assert list(losses["step"]) == list(range(1, metrics["steps"] + 1))
        assert np.isfinite(losses.drop(columns=["step", "epoch"]).to_numpy()).all()
        train = config["train_config"]
        if train["valid_max_rows"] == train.get("final_max_rows"):  # else the final valid reads other rows
            assert pd.read_csv(run / "valid.csv")["HR@50"].max() == metrics["valid"]["HR@50"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_fast_mode(path, runs_dir, monkeypatch):
    monkeypatch.setenv("DIMEREC_FAST", "1")
    monkeypatch.setenv("DIMEREC_RUNS", str(runs_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if os.environ.get("DIMEREC_TEST_DATA") and not os.environ.get("DIMEREC_DATA"):
        monkeypatch.setenv("DIMEREC_DATA", os.environ["DIMEREC_TEST_DATA"])
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    elapsed = time.perf_counter() - started
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.output_type == "stream")
    assert "notebook ran in" in printed, "the last cell did not run"
    if path.stem.startswith(("01", "02", "03")):  # the notebooks that train leave runs the app can open
        trained = [p.parent for p in (runs_dir / "fast").glob(f"nb{path.stem[:2]}-*/metrics.json")]
        assert trained, f"{path.name} wrote no run under $DIMEREC_RUNS/fast"
        for run in trained:
            check_run_files(run, path.name)
    print(f"{path.name}: {elapsed:.1f} s")
