"""transformers' hub kernels stay off: on a GPU they are fetched from the Hub when a model loads, which
fails offline (mmguard never downloads at run time); a user's own USE_HUB_KERNELS wins."""

import os
import subprocess
import sys

import pytest

PROBE = ("import mmguard_core.models; from transformers.integrations.hub_kernels import _kernels_enabled; "
         "import os; print(os.environ['USE_HUB_KERNELS'], _kernels_enabled())")


@pytest.mark.parametrize("given,expected", [(None, "NO False"), ("YES", "YES True")])
def test_importing_the_models_turns_hub_kernels_off_unless_the_user_asked(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    if given is not None:
        env["USE_HUB_KERNELS"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected
