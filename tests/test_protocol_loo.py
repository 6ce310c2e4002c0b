"""`--protocol loo`, RecBole's leave-one-out: every user trains on all but its last two items, validates on the
second-to-last and is tested on the last (trainer.protocol_data, evaluate.build_rows)."""
import numpy as np
import pytest

from dimerec.data.dataset import SeqDataset, TrainSampler
from dimerec.errors import DimeRecError
from dimerec.evaluate import build_rows, evaluate
from dimerec.trainer import TrainConfig, final_metrics, protocol_data, train_model, without_last

P = 10  # the pad id (n_items = 10)


def tiny() -> SeqDataset:
    sequences = [np.array(s, dtype=np.int64) for s in ([0, 1, 2, 3, 4], [5, 6, 7], [8, 9])]
    return SeqDataset(name="tiny", sequences=sequences, n_items=10, max_len=3)


def test_loo_puts_every_user_in_every_part_and_truncates_the_sequences():
    data = tiny()
    views = protocol_data(data, "loo", split_seed=0)
    for part in (views.split.train, views.split.valid, views.split.test):
        assert part.tolist() == [0, 1, 2]
    assert [s.tolist() for s in views.train.sequences] == [[0, 1, 2], [5], [8]]  # at least the first item stays
    assert [s.tolist() for s in views.valid.sequences] == [[0, 1, 2, 3], [5, 6], [8]]
    assert views.test is data
    assert views.train.item_popularity(views.split.train).tolist() == [1, 1, 1, 0, 0, 1, 0, 0, 1, 0]
    # the other protocols: the seeded user split of the one dataset
    plain = protocol_data(data, "next-item", split_seed=0)
    assert plain.train is plain.valid is plain.test is data
    assert plain.split.test.tolist() == data.split(0).test.tolist()


def test_loo_training_never_reads_a_validation_or_test_item():
    views = protocol_data(tiny(), "loo", split_seed=0)
    sampler = TrainSampler(views.train, views.split.train, batch_size=8)
    batches = list(sampler.epoch())
    targets = sorted(int(t) for _, target in batches for t in target)
    seen = {int(i) for hist, _ in batches for i in hist.ravel() if i != P}
    assert targets == [1, 2]  # user 0's items 1 and 2 after their prefixes; users 1 and 2 have no sample
    assert seen == {0, 1}


def test_loo_rows_predict_the_second_to_last_item_in_validation_and_the_last_in_test():
    views = protocol_data(tiny(), "loo", split_seed=0)
    valid = build_rows(views.valid, views.split.valid, "loo")
    assert valid.hist.tolist() == [[0, 1, 2], [P, P, 5]] and valid.targets[:, 0].tolist() == [3, 6]
    assert valid.user.tolist() == [0, 1]  # user 2 has two items: no validation row, a test row
    test = build_rows(views.test, views.split.test, "loo")
    assert test.hist.tolist() == [[1, 2, 3], [P, 5, 6], [P, P, 8]] and test.targets[:, 0].tolist() == [4, 7, 9]
    assert test.cut.tolist() == [4, 2, 1]  # seen = everything before the target, the validation item included


def test_a_loo_run_is_scored_on_every_users_last_item_and_beats_most_popular(planted_small):
    users = np.arange(planted_small.n_users)
    _, _, pop = train_model("pop", planted_small, protocol="loo")
    model, _, metrics = train_model("comirec-sa", planted_small, protocol="loo", max_steps=200, eval_every=100)
    assert metrics["protocol"] == "loo" and metrics["steps"] == 200
    popularity = without_last(planted_small, 2).item_popularity(users)
    assert evaluate(model, planted_small, users, "loo", popularity=popularity)["final"] == metrics["test"]
    assert evaluate(model, without_last(planted_small, 1), users, "loo", popularity=popularity)["final"] == \
        metrics["valid"]
    # measured (300 users, 200 steps): test HR@50 MostPopular 0.217, ComiRec-SA 0.650 (300 rows, one per user)
    assert metrics["test"]["HR@50"] > pop["test"]["HR@50"] + 0.1
    # a loo run is scored under loo only, and a held-out-users run never under loo
    config = {**TrainConfig(protocol="loo").__dict__}
    with pytest.raises(DimeRecError, match="cannot be scored under next-item"):
        final_metrics(model, planted_small, config, protocol="next-item")
    with pytest.raises(DimeRecError, match="cannot be scored under loo"):
        final_metrics(model, planted_small, TrainConfig().__dict__, protocol="loo")
