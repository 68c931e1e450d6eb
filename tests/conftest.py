import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests run on 2 shared cores: more torch threads than one only spin (lvlm-notes)."""
    try:
        import torch
    except ImportError:  # the API-only test environment
        yield
        return
    torch.set_num_threads(1)
    yield
