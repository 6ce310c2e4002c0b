"""The scale benchmark's bookkeeping on a tiny table (its figures are measured by hand, not in tests)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_retrieval", ROOT / "benchmarks" / "bench_retrieval.py")
bench_retrieval = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_retrieval)
best_at_goal, main, synthetic_table = (bench_retrieval.best_at_goal, bench_retrieval.main,
                                      bench_retrieval.synthetic_table)


def test_tables_are_unit_vectors_of_the_stated_shapes():
    for table in ("clustered", "uniform"):
        items, users = synthetic_table(500, table, 7)
        assert items.shape == (500, 64) and users.shape == (7, 4, 64)
        assert (items.norm(dim=1) - 1).abs().max() < 1e-5 and (users.norm(dim=2) - 1).abs().max() < 1e-5


def test_bench_writes_its_key_keeps_the_others_and_plots(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "plot.png"
    out.write_text(json.dumps({"training": {"samples_per_s": 1.0}}))
    main(["--sizes", "2000", "--repeats", "1", "--single-users", "2", "--out", str(out), "--plot", str(png)])
    bench = json.loads(out.read_text())
    assert bench["training"] == {"samples_per_s": 1.0}
    (entry,) = bench["retrieval_at_scale"]["tables"]["clustered"]
    names = [r["retriever"] for r in entry["rows"]]
    assert names == ["torch", "faiss-flat"] + ["faiss-ivf"] * 4 + ["faiss-hnsw"] * 3
    rows = {(r["retriever"], r["params"]): r for r in entry["rows"]}
    assert rows[("faiss-flat", "")]["recall@50"] == 1.0
    assert rows[("faiss-ivf", "nlist=51,nprobe=51")]["recall@50"] == 1.0  # every cell probed: exact
    assert all(0 < r["recall@50"] <= 1 and r["ms_per_user_batch1"] > 0 and r["speedup_batch1024"] > 0
               for r in entry["rows"])
    assert best_at_goal(entry)["retriever"] in ("faiss-ivf", "faiss-hnsw")
    assert png.stat().st_size > 1000
    # a second table keeps the first
    main(["--sizes", "1000", "--table", "uniform", "--repeats", "1", "--single-users", "1", "--out", str(out),
          "--plot", str(png)])
    assert set(json.loads(out.read_text())["retrieval_at_scale"]["tables"]) == {"clustered", "uniform"}
