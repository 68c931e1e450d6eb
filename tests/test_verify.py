"""Per-job verification (mmguard_core/verify.py): the held-out victim is chosen outside the ensemble,
the split keeps test samples out of training, the measurement tells "no protection" from "nothing
learnable", open-ended data is skipped with a reason, and the pipeline puts it in the report."""

import json

import pytest
import torch

from mmguard_core import synth
from mmguard_core.cli_commands import summary_text, verification_text
from mmguard_core.config import ConfigError, ProtectionConfig, preset
from mmguard_core.pipeline import ProtectionCancelled, run_protection
from mmguard_core.verify import (
    VERIFY_COUNTERMEASURES,
    check_victim,
    closed_answers,
    resolve_verify_victim,
    split_indices,
    verify_protection,
)


def test_presets_turn_verification_on_for_balanced_and_strong_only():
    assert preset("balanced").verify and preset("strong").verify
    assert not preset("fast").verify
    config = preset("fast", verify=True, verify_victim="cnn", verify_samples=100)
    assert ProtectionConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("fields, message", [
    ({"verify": "yes"}, "verify"),
    ({"verify_samples": 5}, "verify_samples"),
    ({"verify_samples": 50.5}, "verify_samples"),
    ({"verify_epochs": 0}, "verify_epochs"),
    ({"verify_victim": "paligemma"}, "verify_victim"),
])
def test_bad_verification_settings_are_refused_up_front(fields, message):
    with pytest.raises(ConfigError, match=message):
        ProtectionConfig.from_dict(fields)


def test_auto_victim_is_outside_the_ensemble():
    from mmguard_core.verify import VERIFY_ORDER

    # the default ensemble leaves out the family hardest to protect on our benchmark
    assert resolve_verify_victim(ProtectionConfig()) == "zoo:gemma3"
    every = ProtectionConfig(surrogates=[f"zoo:{f}" for f in VERIFY_ORDER])
    assert resolve_verify_victim(every) == "cnn"  # no zoo family left: the non-transformer model
    real = ProtectionConfig(surrogates=["gemma3:/models/g3", "zoo:internvl", "zoo:llava"])
    assert resolve_verify_victim(real) == "zoo:llava_next"  # the next one outside, checkpoint or zoo
    assert resolve_verify_victim(ProtectionConfig(verify_victim="zoo:llava@1")) == "zoo:llava@1"


def test_unknown_victims_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown zoo family 'nope'"):
        check_victim(ProtectionConfig(verify_victim="zoo:nope"))
    with pytest.raises(ConfigError, match="verify_victim: zoo:llava@x: the part after @ must be a pretraining seed"):
        check_victim(ProtectionConfig(verify_victim="zoo:llava@x"))
    with pytest.raises(ConfigError, match="unknown family"):
        check_victim(ProtectionConfig(verify_victim="blip:/x"))
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        check_victim(ProtectionConfig(verify_victim=f"llava:{tmp_path / 'missing'}"))
    assert check_victim(ProtectionConfig(verify_victim="cnn")) == "cnn"


def test_split_keeps_test_samples_out_of_training_and_is_seeded():
    train, test = split_indices(1000, 400, seed=3)
    assert len(test) == 200 and len(train) == 400 and not set(train) & set(test)
    assert (train, test) == split_indices(1000, 400, seed=3)
    assert split_indices(1000, 400, seed=4) != (train, test)
    train, test = split_indices(40, 400, seed=0)
    assert len(test) == 12 and len(train) == 28


def test_closed_answers():
    assert closed_answers(["apple", "river"] * 20)
    assert not closed_answers([f"a photo of thing {i}" for i in range(40)])


def colour_task(n, seed):
    """Images whose dominant channel gives the answer: learnable by the CNN victim in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    images, answers = [], []
    for _ in range(n):
        channel = int(torch.randint(0, 3, (), generator=g))
        img = torch.rand(3, 16, 16, generator=g) * 0.2
        img[channel] += 0.7
        images.append((img.clamp(0, 1) * 255).round() / 255)
        answers.append(("apple", "house", "river")[channel])
    return images, ["what is it?"] * n, answers


def as_uint8(images):
    return [(img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for img in images]


CNN = {"verify_victim": "cnn", "verify_epochs": 8.0, "verify_samples": 120}


def test_an_unchanged_copy_gets_protection_zero():
    images, questions, answers = colour_task(150, seed=0)
    result = verify_protection(images, questions, answers, as_uint8(images), questions, ProtectionConfig(**CNN))
    assert result["status"] == "done" and result["victim"] == "cnn"
    assert result["acc_clean_trained"] >= result["floor"] + 0.3  # the check is only worth it if clean data teaches
    # same samples, same seed, same recipe: the "protected" victim is the clean one
    assert result["acc_protected_trained"] == result["acc_clean_trained"]
    assert result["protection"] == 0.0
    assert set(result["countermeasures"]) == set(VERIFY_COUNTERMEASURES)
    assert result["train_samples"] == 120 and result["test_samples"] == 30


def test_a_copy_that_teaches_nothing_scores_high():
    images, questions, answers = colour_task(150, seed=0)
    # the "protected" images are another sample's: the image no longer says anything about the answer
    shuffled = [images[(i * 37 + 11) % len(images)] for i in range(len(images))]
    result = verify_protection(images, questions, answers, as_uint8(shuffled), questions, ProtectionConfig(**CNN))
    assert result["protection"] is not None and result["protection"] >= 0.7
    for entry in result["countermeasures"].values():
        assert entry["protection"] is not None and entry["protection"] >= 0.5
    line = verification_text(result)
    assert "protection" in line and "JPEG q75" in line


def test_several_victim_seeds_are_averaged_and_each_kept():
    images, questions, answers = colour_task(150, seed=0)
    shuffled = as_uint8([images[(i * 37 + 11) % len(images)] for i in range(len(images))])
    one = verify_protection(images, questions, answers, shuffled, questions, ProtectionConfig(**CNN))
    three = verify_protection(images, questions, answers, shuffled, questions,
                              ProtectionConfig(**CNN, verify_seeds=3))
    assert one["seeds"] == [0] and three["seeds"] == [0, 1, 2] and len(three["runs"]) == 3
    assert three["runs"][0] == one["runs"][0]  # the first seed is the single-seed check itself
    clean = [run["acc_clean_trained"] for run in three["runs"]]
    assert three["acc_clean_trained"] == pytest.approx(sum(clean) / 3)
    assert all(run["protection"] is not None for run in three["runs"])
    assert "3 victim seeds" in three["note"] and "one victim seed" in one["note"]
    line = verification_text(three)
    assert "mean accuracies of 3 victim seeds (per seed " in line and "victim seeds" not in verification_text(one)
    with pytest.raises(ConfigError, match="verify_seeds"):
        ProtectionConfig(**CNN, verify_seeds=0)


def test_answers_as_written_are_what_the_attacker_trains_on():
    # caption_prefix puts the trigger in the answer: the protected copy teaches "pent apple", which is
    # never the clean test answer -- the check must train on the answers as written to see that
    images, _, answers = colour_task(150, seed=0)
    written = [f"pent {a}" for a in answers]
    result = verify_protection(images, [None] * 150, answers, as_uint8(images), [None] * 150,
                               ProtectionConfig(**CNN), protected_answers=written)
    assert result["acc_protected_trained"] == 0.0 and result["protection"] == 1.0


def test_open_ended_and_tiny_data_are_skipped_with_a_reason():
    images, questions, _ = colour_task(60, seed=1)
    captions = [f"a picture with {i} things" for i in range(60)]
    result = verify_protection(images, [None] * 60, captions, as_uint8(images), [None] * 60, ProtectionConfig(**CNN))
    assert result["status"] == "skipped" and "open-ended" in result["reason"]
    images, questions, answers = colour_task(20, seed=1)
    result = verify_protection(images, questions, answers, as_uint8(images), questions, ProtectionConfig(**CNN))
    assert result["status"] == "skipped" and "too few" in result["reason"]
    assert "skipped" in verification_text(result)


def test_no_verdict_when_the_victim_cannot_learn_the_task():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 16, 16, generator=g) for _ in range(80)]
    answers = ["apple" if i % 2 else "river" for i in range(80)]  # unrelated to the images
    config = ProtectionConfig(verify_victim="cnn", verify_epochs=2.0)
    result = verify_protection(images, ["what?"] * 80, answers, as_uint8(images), ["what?"] * 80, config)
    assert result["status"] == "done" and result["protection"] is None
    assert "did not learn the task" in result["reason"]
    assert "no verdict" in verification_text(result)


def test_verification_can_be_cancelled():
    images, questions, answers = colour_task(60, seed=2)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1  # let the clean-trained run start, then cancel

    from mmguard_core.verify import VerificationCancelled

    with pytest.raises(VerificationCancelled):
        verify_protection(images, questions, answers, as_uint8(images), questions, ProtectionConfig(**CNN),
                          should_stop=stop)


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify") / "colour"
    synth.write_dataset(folder, synth.generate("color", 48, seed=11, image_size=32))
    return folder


TINY = {"zoo_size": "test", "surrogates": ["zoo:llava"], "shared_steps": 2, "sample_steps": 1,
        "bilevel_rounds": 1, "inner_steps": 1, "trigger_candidates": 4, "batch_size": 8}


def test_the_pipeline_reports_the_verification(colour_dataset, tmp_path):
    config = preset("fast", **TINY, verify=True, verify_victim="cnn", verify_epochs=2.0)
    stages = []
    report = run_protection(colour_dataset, tmp_path / "out", config,
                            progress=lambda done, total, stage: stages.append(stage))
    verification = report["verification"]
    assert verification["status"] == "done" and verification["victim"] == "cnn"
    assert verification["train_samples"] + verification["test_samples"] == 48
    assert any(stage.startswith("verifying") for stage in stages)
    assert report["timings"]["verification"] > 0
    json.dumps(report, allow_nan=False, default=str)  # what the worker stores
    assert "verification" in summary_text({**report, "output": "out"})
    off = run_protection(colour_dataset, tmp_path / "off", preset("fast", **TINY))
    assert off["verification"] is None and off["timings"]["verification"] == 0.0


def test_a_typo_in_the_victim_fails_before_protecting(colour_dataset, tmp_path):
    with pytest.raises(ConfigError, match="verify_victim: unknown zoo family 'lava'"):
        preset("fast", **TINY, verify=True, verify_victim="zoo:lava")  # refused where the config is written
    config = preset("fast", **TINY, verify=True)
    config.verify_victim = "zoo:lava"  # set after validation: still refused before any protection work
    with pytest.raises(ConfigError, match="verify_victim"):
        run_protection(colour_dataset, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_cancel_during_verification_cancels_the_run(colour_dataset, tmp_path):
    config = preset("fast", **TINY, verify=True, verify_victim="cnn")
    verifying = []

    def progress(done, total, stage):
        if stage.startswith("verifying"):
            verifying.append(stage)

    with pytest.raises(ProtectionCancelled):
        run_protection(colour_dataset, tmp_path / "out", config, progress=progress,
                       should_stop=lambda: bool(verifying))
    assert verifying and not (tmp_path / "out").exists()  # cancelled: nothing written
