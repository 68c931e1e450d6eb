import json

import pytest

from mmguard_core.config import (
    ELEVENTH_SESSION_FIELDS,
    PRESETS,
    ConfigError,
    ProtectionConfig,
    parse_epsilon,
    preset,
)


def test_round_trip_through_json_keeps_every_field():
    config = ProtectionConfig(epsilon="4/255", surrogates=["zoo:llava", "qwen2_vl:/models/q"], bph_weight=0.5,
                              sample_objective="minimize", eot_transforms=["jpeg", "crop"], seed=7)
    again = ProtectionConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["epsilon"] == pytest.approx(4 / 255)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_ordered_by_effort(name):
    config = preset(name)
    assert config.method == "mmguard"
    assert preset("fast").sample_steps < preset("balanced").sample_steps < preset("strong").sample_steps
    assert preset("fast").trigger_candidates < preset("balanced").trigger_candidates < preset("strong").trigger_candidates
    # the two verified presets craft targeted noise with the whole budget; fast keeps the cheap pattern
    assert preset("balanced").sample_objective == preset("strong").sample_objective == "targeted"
    assert preset("balanced").shared_steps == preset("strong").shared_steps == 0 < preset("fast").shared_steps
    assert preset("strong").trigger_length > preset("balanced").trigger_length  # strong also plants more words


@pytest.mark.parametrize("text,expected", [("8/255", 8 / 255), ("0.02", 0.02), (8, 8 / 255), (0.01, 0.01)])
def test_epsilon_forms(text, expected):
    assert parse_epsilon(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"epsilon": 0.5}, "epsilon"),
        ({"epsilon": "abc"}, "epsilon"),
        ({"epsilon": 0}, "epsilon"),
        ({"method": "magic"}, "method"),
        ({"trigger_length": 20}, "trigger_length"),
        ({"eot_transforms": ["rotate"]}, "eot_transforms"),
        ({"surrogates": ["llava"]}, "surrogates"),
        ({"surrogates": ["zoo:llava@x"]}, "surrogates"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"binding_layers": "x,y"}, "binding_layers"),
        ({"zoo_size": "huge"}, "zoo_size"),
        ({"bph_betas": ["x", 1, 1]}, "bph_betas"),
        ({"bph_betas": [float("nan"), 1, 1]}, "bph_betas"),
        ({"bph_betas": [float("inf"), 1, 1]}, "bph_betas"),
        ({"bph_betas": 5}, "bph_betas"),
        ({"binding_layers": 5}, "binding_layers"),
        ({"surrogates": ["zoo:lava"]}, "surrogates"),
        ({"surrogates": ["blip:/models/blip"]}, "surrogates"),
        ({"verify_victim": "zoo:lava"}, "verify_victim"),
        ({"epsilon": 10**400}, "epsilon"),  # beyond any float
        ({"robust_epsilon": "1" + "0" * 400 + "/1"}, "robust_epsilon"),
        ({"bph_betas": [10**400, 1, 1]}, "bph_betas"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        ProtectionConfig(**changes)
    assert str(info.value).startswith(field)


def test_unknown_fields_and_bad_json_are_refused_clearly():
    with pytest.raises(ConfigError, match="unknown field.*colour"):
        ProtectionConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="not valid JSON"):
        ProtectionConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="not valid JSON.*4300 digits"):
        ProtectionConfig.from_json('{"epsilon": ' + "1" * 5000 + "}")
    with pytest.raises(ConfigError, match="preset"):
        preset("turbo")


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, mmguard_core.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_binding_losses_ask_for_the_error_minimising_objective():
    # they shape error-minimising noise with the trigger in place; on the default targeted noise they
    # would do nothing, so the config says what to add instead of silently ignoring them
    with pytest.raises(ConfigError, match='"sample_objective": "minimize"'):
        preset("balanced", bph_weight=1.0)
    config = preset("balanced", bph_weight=1.0, crs_weight=1.0, sample_objective="minimize", shared_steps=30)
    assert config.uses_binding and config.sample_objective == "minimize"


def test_a_config_from_before_the_targeted_default_still_means_what_it_meant():
    # stored job rows, reports and --config files written before the tenth session name shared_steps
    # and no sample_objective: they ran the error-minimising noise and still do
    old = {k: v for k, v in preset("balanced").to_dict().items() if k not in ("sample_objective", "target_steps")}
    old.update(shared_steps=30, bph_weight=1.0)
    assert ProtectionConfig.from_dict(old).sample_objective == "minimize"
    assert preset("strong", shared_steps=60).sample_objective == "minimize"  # asking for the group pattern
    # ... which drops strong's image classifiers (a surrogate of the targeted noise only)
    assert preset("strong", shared_steps=60).classifier_steps == 0
    assert preset("strong", sample_objective="minimize", shared_steps=30).classifier_steps == 0
    with pytest.raises(ConfigError, match="classifier_steps: the image classifier is a surrogate of the targeted"):
        preset("strong", sample_objective="minimize", shared_steps=30, classifier_steps=300)  # asked for both
    assert preset("strong").sample_objective == "targeted"
    with pytest.raises(ConfigError, match='weight_noise.*"shared_steps": 30'):
        preset("balanced", weight_noise=0.3)  # it would do nothing without the pattern's steps
    assert preset("balanced", weight_noise=0.3, shared_steps=30).weight_noise == 0.3


def test_a_stored_config_from_before_the_robust_copies_keeps_its_plain_copies():
    # a complete config written by the tenth or eleventh session (a job row, a report) has no
    # robust_epsilon: it fine-tuned the clean-task copies plainly, and a resumed job must not change that
    stored = {k: v for k, v in preset("strong").to_dict().items() if k in ELEVENTH_SESSION_FIELDS}
    assert len(stored) == len(ELEVENTH_SESSION_FIELDS)  # every field of then still exists
    assert ProtectionConfig.from_dict(stored).robust_epsilon == 0.0
    assert ProtectionConfig.from_dict(stored).sample_noise_scale == 1  # full-resolution noise, as then
    # and one from the twelfth session, written with robust copies but before sample_noise_scale
    twelfth = {k: v for k, v in preset("strong").to_dict().items() if k not in ("sample_noise_scale", "plain_copies")}
    assert ProtectionConfig.from_dict(twelfth).robust_epsilon == 2 / 255
    # a stored strong job from before the fourteenth session keeps its pixel noise and robust copies only
    assert (ProtectionConfig.from_dict(twelfth).sample_noise_scale, ProtectionConfig.from_dict(twelfth).plain_copies) \
        == (1, False)
    # strong (since the fourteenth session): smooth noise against plain and robust copies; balanced as it was
    assert (preset("strong").sample_noise_scale, preset("strong").plain_copies) == (4, True)
    assert (preset("balanced").sample_noise_scale, preset("balanced").plain_copies) == (1, False)
    assert ProtectionConfig.from_dict({**stored, "momentum": 0.0}).robust_epsilon == 0.0
    # a partial config (a user's --config file or job request) gets the current default
    assert ProtectionConfig.from_dict({"target_steps": 40}).robust_epsilon == 2 / 255
    assert preset("strong").robust_epsilon == preset("balanced").robust_epsilon == 2 / 255
    round_trip = preset("strong", robust_epsilon=4 / 255)
    assert ProtectionConfig.from_dict(round_trip.to_dict()) == round_trip
