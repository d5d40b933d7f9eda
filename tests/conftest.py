import os

import pytest
import torch

# Tests must be deterministic and must not pick up a user's cache.
os.environ.setdefault("PLASTICLM_HOME", os.path.join(os.path.dirname(__file__), "..", ".cache", "test-home"))


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An isolated $PLASTICLM_HOME for tests that build corpora or caches."""
    monkeypatch.setenv("PLASTICLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory):
    """A small study directory (real tiny runs + runs with designed onsets); see tests/studies.py."""
    from tests.studies import make_study

    torch.set_num_threads(1)
    return make_study(tmp_path_factory.mktemp("study"))
