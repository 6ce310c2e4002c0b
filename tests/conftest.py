import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_data: reads the real datasets from $DIMEREC_TEST_DATA (default ../shared/data)")


@pytest.fixture
def real_data_dir() -> Path:
    """The real data folder; skips when it is missing, fails instead when $CI is set."""
    path = Path(os.environ.get("DIMEREC_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        message = (f"real data folder {path} not found; set DIMEREC_TEST_DATA to the folder "
                   f"holding ml-1m/, yoochoose/, kuairec/")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def planted_small():
    """A small planted world (300 users, 480 items): one training epoch takes about a second."""
    from dimerec.data.planted import make_planted
    return make_planted(seed=0, n_users=300)


@pytest.fixture(scope="session")
def trained_sa(planted_small, tmp_path_factory):
    """ComiRec-SA trained for two epochs on `planted_small` by `train(...)`: (model, metrics, run_dir)."""
    import torch

    from dimerec.models.comirec_sa import ComiRecSA
    from dimerec.trainer import TrainConfig, seed_everything, train

    run_dir = tmp_path_factory.mktemp("comirec-sa-run")
    with torch.random.fork_rng():
        seed_everything(0)
        model = ComiRecSA(planted_small.n_items, planted_small.max_len, ComiRecSA.Config())
        metrics = train(model, planted_small, TrainConfig(max_epochs=2, max_minutes=1.0, seed=0), run_dir,
                        progress=False)
    return model, metrics, run_dir
