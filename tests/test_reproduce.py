"""`reproduce`: runs every model over seeds, skips finished runs, writes a table naming its protocol."""
import pandas as pd

import dimerec.data.planted as planted
from dimerec.cli import main


def test_reproduce_dimerec_on_planted_writes_a_table_and_resumes(tmp_path, monkeypatch):
    full_size = planted.make_planted
    monkeypatch.setattr(planted, "make_planted", lambda seed=0: full_size(seed=seed, n_users=200))  # speed
    argv = ["reproduce", "dimerec", "--dataset", "planted", "--seeds", "2", "--max-minutes", "0.03",
            "--valid-max-rows", "500", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert main(argv) == 0
    md = (tmp_path / "results" / "dimerec_planted.md").read_text()
    assert "next-item protocol" in md and "Paired t-test over 2 seeds" in md and "★" in md
    table = pd.read_csv(tmp_path / "results" / "dimerec_planted.csv")
    assert list(table["model"]) == ["MostPopular", "ComiRec-SA", "DimeRec (paper)", "DimeRec (ours)",
                                    "DimeRec (ours, serve mean)", "no-diffusion control"]
    assert (table["seeds"] == 2).all() and table["HR@50"].between(0, 100).all()
    pop = table.set_index("model").loc["MostPopular"]
    assert pop["HR@50 std"] == 0  # popularity does not depend on the training seed
    first = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.json")}
    assert len(first) == 12
    assert main(argv) == 0  # a second call finds every run finished and only re-tabulates
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.json")} == first
