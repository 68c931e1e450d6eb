"""The benchmarks' `--set FIELD=VALUE` overrides: JSON values, bare words as strings, a clear refusal."""

import pytest

from benchmarks.common import config_overrides
from mmguard_core.config import preset


def test_set_reads_json_and_bare_words_alike():
    overrides = config_overrides(["seed=3", 'classifier_architectures=["cnn","vit"]', "target_choice=nearest",
                                  'trigger_order="code_first"', "plain_copies=true", "epsilon=0.02"])
    assert overrides == {"seed": 3, "classifier_architectures": ["cnn", "vit"], "target_choice": "nearest",
                         "trigger_order": "code_first", "plain_copies": True, "epsilon": 0.02}
    assert preset("strong", **overrides).target_choice == "nearest"  # what eval_matrix.py does with them


def test_set_without_a_field_is_refused_with_the_form_it_wants():
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        config_overrides(["nearest"])
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        config_overrides(["=3"])
