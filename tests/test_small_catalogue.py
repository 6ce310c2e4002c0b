"""Issue 31, item 3: a catalogue of fewer items than the top-N lists (here 10, and 2) trains and is scored under
every model, every protocol; @N is then @n_items (dimerec.metrics)."""
import json
import math

import numpy as np
import pytest

from dimerec.cli import main
from dimerec.data import load_dataset
from dimerec.metrics import BEYOND_KEYS, METRIC_KEYS, MRR_KEYS
from dimerec.models import MODELS
from dimerec.trainer import train_model


def write_catalogue(folder, n_items: int, n_users: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = [f"{u}\t{rng.integers(n_items)}\t{t}" for u in range(n_users) for t in range(rng.integers(3, 9))]
    rows += [f"0\t{i}\t{100 + i}" for i in range(n_items)]  # user 0 holds every item: the catalogue is n_items
    (folder / f"{folder.name}.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                                 + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_catalogue(root / "ten", 10)
    data = load_dataset("ten", root)
    assert data.n_items == 10
    return data


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_and_is_scored_on_ten_items(model, ten):
    _, _, metrics = train_model(model, ten, max_steps=3, eval_every=2, valid_max_rows=50)
    for split in ("valid", "test"):
        values = metrics[split]
        assert set(METRIC_KEYS + MRR_KEYS + BEYOND_KEYS) <= set(values)
        assert all(math.isfinite(v) for v in values.values())
        # every list is the whole catalogue: every target is in it, and @50 is @10
        assert values["HR@10"] == values["HR@50"] == values["Recall@50"] == 1.0
        # each hit sits within the top 10: its discount is at least 1 / log2(1 + 10)
        assert values["NDCG@50"] == values["NDCG@10"] and 1 / math.log2(11) <= values["NDCG@10"] <= 1
        assert values["ItemCoverage@50"] == 1.0  # every list holds every item


@pytest.mark.parametrize("protocol", ["next-item", "future", "loo"])
@pytest.mark.parametrize("mask_seen", [False, True])
def test_two_items_under_every_protocol(protocol, mask_seen, tmp_path, capsys):
    write_catalogue(tmp_path / "data" / "two", 2, seed=1)
    out = tmp_path / "run"
    rc = main(["train", "--model", "comirec-sa", "--dataset", "two", "--data-dir", str(tmp_path / "data"), "--quiet",
               "--max-steps", "2", "--protocol", protocol, *(["--mask-seen"] if mask_seen else []), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["HR@50"] == metrics["test"]["HR@10"] and math.isfinite(metrics["test"]["NDCG@50"])
