"""The RecBole comparison's bookkeeping (benchmarks/recbole_compare.py): the row order RecBole is given, the
settings both sides are given, the report. Its figures are measured by running it, never in tests, and RecBole
itself is not installed here (it needs numpy < 2)."""
import importlib.util
from pathlib import Path

from dimerec.data import MAX_LEN

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("recbole_compare", ROOT / "benchmarks" / "recbole_compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def test_a_file_without_timestamps_gets_its_row_order_as_time(tmp_path):
    source = tmp_path / "data" / "ml-1m"
    source.mkdir(parents=True)
    (source / "ml-1m.inter").write_text("user_id:token\titem_id:token\n1\t30\n1\t10\n2\t20\n1\t20\n")
    folder = compare.with_row_order_as_time(tmp_path / "data", tmp_path / "scratch")
    rows = (folder / "ml-1m" / "ml-1m.inter").read_text().splitlines()
    assert rows == ["user_id:token\titem_id:token\ttimestamp:float", "1\t30\t0", "1\t10\t1", "2\t20\t2", "1\t20\t3"]
    # a file that has its own timestamps is read as it is
    (source / "ml-1m.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t30\t5\n")
    assert compare.with_row_order_as_time(tmp_path / "data", tmp_path / "other") == tmp_path / "data"


def test_both_sides_get_the_same_sizes_loss_and_optimiser():
    for model in compare.MODELS:
        ours = compare.our_flags(model)
        theirs = compare.recbole_settings(model)
        ours = dict(zip(ours[::2], ours[1::2]))
        assert ours["--dim"] == str(theirs["embedding_size"]) == str(theirs["hidden_size"]) == "64"
        assert ours["--loss-kind"] == "ce" and theirs["loss_type"] == "CE" and theirs["train_neg_sample_args"] is None
        assert float(ours["--lr"]) == theirs["learning_rate"]
        assert int(ours["--batch-size"]) == theirs["train_batch_size"]
        assert theirs["MAX_ITEM_LIST_LENGTH"] == MAX_LEN["ml-1m"]  # our ML-1M history length
    sasrec = dict(zip(compare.our_flags("sasrec")[::2], compare.our_flags("sasrec")[1::2]))
    theirs = compare.recbole_settings("sasrec")
    assert int(sasrec["--n-layers"]) == theirs["n_layers"] and int(sasrec["--n-heads"]) == theirs["n_heads"]
    assert float(sasrec["--dropout"]) == theirs["hidden_dropout_prob"] == theirs["attn_dropout_prob"]


def test_the_report_states_each_ratio_and_leaves_unscored_cells_empty(tmp_path):
    report = {"command": "python benchmarks/recbole_compare.py", "settings": "s", "differences": "d",
              "load_average": "2.0–3.0", "models": {
                  "sasrec": {"ours_samples_per_s": 500.0, "recbole_samples_per_s": 400.0, "speed_ratio": 1.25,
                             "ours_windows_samples_per_s": 4000.0, "windows_speed_ratio": 10.0,
                             "rounds": {"ours": [500.0, 600.0], "recbole": [400.0, 300.0]},
                             "quality": {"ours": {"HR@10": 0.15, "NDCG@10": 0.07, "HR@50": 0.4, "steps": 2000,
                                                  "samples_per_s": 450.0},
                                         "recbole": {"HR@10": 0.16, "NDCG@10": 0.075, "HR@50": 0.41, "steps": 2000,
                                                     "samples_per_s": 500.0}}},
                  "gru4rec": {"ours_samples_per_s": 900.0, "recbole_samples_per_s": 1000.0, "speed_ratio": 0.9,
                              "rounds": {"ours": [900.0], "recbole": [1000.0]}}}}
    compare.write_report(report, tmp_path / "out")
    lines = (tmp_path / "out.md").read_text().splitlines()
    assert "| SASRec | 500 | 400 | 1.25× | 4000 | 10.00× | 15.00 | 16.00 | 7.00 | 7.50 | 40.00 | 41.00 |" in lines
    # a report written before windows (the committed one) has no windows cells
    assert "| GRU4Rec | 900 | 1000 | 0.90× | — | — | — | — | — | — | — | — |" in lines
    assert "- SASRec: ours/RecBole per round 1.25×, 2.00×; over the 2000-batch quality runs" in "\n".join(lines)
    assert "ours 450 and RecBole 500 samples/s (0.90×)." in "\n".join(lines)
    assert "- GRU4Rec: ours/RecBole per round 0.90×." in lines
    assert (tmp_path / "out.json").read_text().startswith("{")
