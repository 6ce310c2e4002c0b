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
