"""`mmguard protect` / `mmguard evaluate` end to end, as a user runs them (subprocess, real files,
the tiny "test" zoo)."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmguard_core import synth

FAST = ["--preset", "fast", "--zoo-size", "test", "--surrogate", "zoo:llava", "--surrogate", "zoo:qwen2_vl", "-q"]


def mmguard(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mmguard_core.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def vqa_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqa")
    synth.write_dataset(folder, synth.generate("color", 12, seed=5))
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_protect_folder_to_zip_end_to_end(vqa_folder, tmp_path):
    out = tmp_path / "protected.zip"
    report_path = tmp_path / "report.json"
    result = mmguard("protect", vqa_folder, "-o", out, "--report", report_path, "--epsilon", "8/255", *FAST)
    assert result.returncode == 0, result.stderr
    assert "protected 12 samples" in result.stdout and "PSNR" in result.stdout
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as archive:
        archive.extractall(unpacked)
    original = read_jsonl(vqa_folder / "data.jsonl")
    protected = read_jsonl(unpacked / "data.jsonl")
    assert len(protected) == len(original)
    for before, after in zip(original, protected, strict=True):
        assert after["answer"] == before["answer"]
        assert before["question"] in after["question"] and after["question"] != before["question"]
        a = np.asarray(Image.open(vqa_folder / before["image"]).convert("RGB")).astype(int)
        b = np.asarray(Image.open(unpacked / after["image"]).convert("RGB")).astype(int)
        assert a.shape == b.shape and 0 < np.abs(a - b).max() <= 8
    report = json.loads(report_path.read_text())
    assert report["summary"]["linf_max"] <= 8 / 255 + 1e-9
    assert report["summary"]["psnr_mean"] > 30
    assert len(report["images"]) == 12 and report["surrogates"] == ["zoo:llava", "zoo:qwen2_vl"]
    # the config's default "auto", reported as what it resolved to
    assert report["device"] == ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    assert report["trigger"]["samples_with_trigger"] == 12 and report["trigger"]["race"] is None
    assert report["loss_curve"]["shared"]


def test_protect_with_a_trigger_race_reports_it(vqa_folder, tmp_path):
    report_path = tmp_path / "report.json"
    result = mmguard("protect", vqa_folder, "-o", tmp_path / "out", "--report", report_path, *FAST,
                     "--trigger-trials", "2")
    assert result.returncode == 0, result.stderr
    race = json.loads(report_path.read_text())["trigger"]["race"]
    assert len(race["clean_loss"]) == 2 and race["clean_loss"][race["pick"]] == max(race["clean_loss"])
    bad = mmguard("protect", vqa_folder, "-o", tmp_path / "out2", *FAST, "--trigger-trials", "0")
    assert bad.returncode == 2 and "trigger_trials" in bad.stderr and not (tmp_path / "out2").exists()


def test_protect_with_verification_prints_it(vqa_folder, tmp_path):
    report_path = tmp_path / "report.json"
    result = mmguard("protect", vqa_folder, "-o", tmp_path / "out", "--report", report_path, *FAST, "--verify",
                     "--verify-victim", "cnn")
    assert result.returncode == 0, result.stderr
    # 12 samples cannot be split into a training part and a held-out test part: said, not hidden
    assert "verification (cnn) skipped: 12 samples are too few" in result.stdout
    assert json.loads(report_path.read_text())["verification"]["status"] == "skipped"
    refused = mmguard("protect", vqa_folder, "-o", tmp_path / "out2", *FAST, "--verify", "--verify-victim", "zoo:nope")
    assert refused.returncode == 2 and "verify_victim: unknown zoo family 'nope'" in refused.stderr
    assert not (tmp_path / "out2").exists()


def test_the_default_preset_aims_the_noise_at_another_answer_and_reports_it(vqa_folder, tmp_path):
    report_path = tmp_path / "report.json"
    settings = tmp_path / "config.json"
    settings.write_text(json.dumps({"target_steps": 4, "trigger_candidates": 4}))  # a short run of balanced
    result = mmguard("protect", vqa_folder, "-o", tmp_path / "out", "--report", report_path, "--no-verify",
                     "--zoo-size", "test", "--surrogate", "zoo:llava", "-q", "--config", settings)
    assert result.returncode == 0, result.stderr
    assert "per-sample noise targeted at the next group's answer" in result.stdout
    report = json.loads(report_path.read_text())
    aims = report["sample_noise"].pop("targets")
    assert report["sample_noise"] == {"objective": "targeted", "target_steps": 4, "target_choice": "next",
                                       "target_loss": "ce", "target_feature_weight": 0.0,
                                       "ensemble_gradient": "sum"}
    assert set(aims) == set(aims.values()) == set(report["groups"]["triggers"])  # every group aims at another
    assert all(group != aim for group, aim in aims.items())
    assert report["timings"]["clean_task_surrogates"] > 0 and report["loss_curve"]["shared"] == []
    assert 0 < report["summary"]["linf_max"] <= 8 / 255 + 1e-9


def test_trigger_design_flags_reach_the_config():
    import argparse

    from mmguard_core.cli_commands import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--trigger-position", "split", "--trigger-vocabulary", "distinct",
                                                 "--no-verify"]))
    assert (config.trigger_position, config.trigger_vocabulary, config.verify) == ("split", "distinct", False)
    default = config_from_args(parser.parse_args([]))
    assert (default.trigger_position, default.trigger_vocabulary, default.verify) == ("twice", "mixed", True)


def test_a_config_file_goes_over_the_preset_and_flags_over_both(tmp_path):
    import argparse

    from mmguard_core.cli_commands import add_config_arguments, config_from_args
    from mmguard_core.config import ConfigError, ProtectionConfig, preset

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"target_steps": 40, "trigger_length": 4}))
    config = config_from_args(parser.parse_args(["--preset", "strong", "--config", str(partial), "--seed", "7"]))
    strong = preset("strong")
    assert (config.shared_steps, config.eot_transforms) == (strong.shared_steps, strong.eot_transforms)
    assert (config.target_steps, config.trigger_length, config.seed) == (40, 4, 7)
    flagged = config_from_args(parser.parse_args(["--config", str(partial), "--trigger-length", "2"]))
    assert (flagged.trigger_length, flagged.shared_steps) == (2, preset("balanced").shared_steps)
    full = tmp_path / "full.json"  # a whole config (e.g. copied from a report) keeps nothing of the preset
    full.write_text(preset("fast", seed=3).to_json())
    assert config_from_args(parser.parse_args(["--preset", "strong", "--config", str(full)])) == \
        ProtectionConfig.from_json(full.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weight_noise": 2}))
    with pytest.raises(ConfigError, match="weight_noise"):
        config_from_args(parser.parse_args(["--config", str(bad)]))


def test_evaluate_prints_protection(vqa_folder, tmp_path):
    protected = tmp_path / "p"
    assert mmguard("protect", vqa_folder, "-o", protected, *FAST).returncode == 0
    out = tmp_path / "eval.json"
    result = mmguard("evaluate", "--clean-train", vqa_folder, "--protected-train", protected, "--test", vqa_folder,
                     "--victim", "zoo:llava", "--zoo-size", "test", "--epochs", "1", "-o", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    run = data["runs"][0]
    assert 0 <= run["acc_clean"] <= 1 and 0 <= run["acc_protected"] <= 1
    assert "protection" in result.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["protect", "evaluate"])
def test_cuda_on_a_machine_without_one_is_a_clear_error(vqa_folder, tmp_path, command):
    if command == "protect":
        args = ["protect", vqa_folder, "-o", tmp_path / "o", *FAST, "--device", "cuda"]
    else:
        args = ["evaluate", "--clean-train", vqa_folder, "--protected-train", vqa_folder, "--test", vqa_folder,
                "--zoo-size", "test", "--device", "cuda"]
    result = mmguard(*args)
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_epsilon_out_of_range_is_a_clear_error(vqa_folder, tmp_path):
    result = mmguard("protect", vqa_folder, "-o", tmp_path / "o", "--epsilon", "64/255", *FAST)
    assert result.returncode == 2
    assert "epsilon" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["bad_json_line", "missing_image", "unreadable_image", "missing_field"])
def test_bad_input_names_file_and_line(vqa_folder, tmp_path, case):
    folder = tmp_path / "in"
    synth.write_dataset(folder, synth.generate("color", 4, seed=6))
    lines = (folder / "data.jsonl").read_text().splitlines()
    if case == "bad_json_line":
        lines[2] = '{"image": "images/000003.png", "question": '
        expected = ["data.jsonl", "line 3"]
    elif case == "missing_image":
        (folder / "images/000002.png").unlink()
        expected = ["000002.png"]
    elif case == "unreadable_image":
        (folder / "images/000004.png").write_bytes(b"not a png at all")
        expected = ["000004.png"]
    else:
        record = json.loads(lines[1])
        del record["answer"]
        lines[1] = json.dumps(record)
        expected = ["data.jsonl", "line 2"]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    result = mmguard("protect", folder, "-o", tmp_path / "o", *FAST)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr
    assert not (tmp_path / "o").exists()


def _refused_before_any_work(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for text in fragments:
        assert text in result.stderr


def test_protect_refuses_an_output_or_report_it_could_not_write_before_starting(vqa_folder, tmp_path):
    existing = tmp_path / "taken.zip"
    existing.write_bytes(b"an earlier release")
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", existing, *FAST), "already exists")
    assert existing.read_bytes() == b"an earlier release"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", a_file / "out.zip", *FAST), "is a file")
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", tmp_path / "o", "--report", tmp_path, *FAST),
                             "is a folder")
    assert not (tmp_path / "o").exists()
    # refused at the start, not after hours of work: an output inside the input, a report that is the output
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", vqa_folder / "protected", *FAST),
                             "must not be inside the input folder")
    assert not (vqa_folder / "protected").exists()
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", tmp_path / "o.zip", "--report", tmp_path / "o.zip",
                                     *FAST), "would overwrite the protected output")
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", tmp_path / "o", "--field", "answer", *FAST),
                             "--field", "use ROLE=NAME")
    assert not (tmp_path / "o.zip").exists() and not (tmp_path / "o").exists()


def test_protect_refuses_a_config_file_with_a_mistyped_field(vqa_folder, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"bph_betas": ["x", 1, 1]}))
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", tmp_path / "o", "--config", config, "-q"),
                             "bph_betas")
    config.write_text(json.dumps({"epsilon": "8/255"}), encoding="utf-16")  # what PowerShell's > writes
    _refused_before_any_work(mmguard("protect", vqa_folder, "-o", tmp_path / "o", "--config", config, "-q"),
                             "is not UTF-8 text")
    assert not (tmp_path / "o").exists()


def test_unknown_families_are_usage_errors(vqa_folder, tmp_path):
    _refused_before_any_work(mmguard("evaluate", "--clean-train", vqa_folder, "--protected-train", vqa_folder,
                                     "--test", vqa_folder, "--victim", "llava"), "--victim: 'llava' must read")
    _refused_before_any_work(mmguard("evaluate", "--clean-train", vqa_folder, "--protected-train", vqa_folder,
                                     "--test", vqa_folder, "--victim", "zoo:lava"), "unknown zoo family 'lava'")
    _refused_before_any_work(mmguard("zoo", "build", "--family", "nope", "--cache-dir", tmp_path), "invalid choice")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--threads", "0", "must be at least 1"),
    ("--batch-size", "0", "must be at least 1"),
    ("--epochs", "-1", "must be a number above 0"),
    ("--lr", "nan", "must be a number above 0"),
    ("--protect-fraction", "1.5", "must be between 0 and 1"),
])
def test_evaluate_refuses_bad_numbers_before_fine_tuning(vqa_folder, flag, value, message):
    result = mmguard("evaluate", "--clean-train", vqa_folder, "--protected-train", vqa_folder, "--test", vqa_folder,
                     "--zoo-size", "test", flag, value)
    _refused_before_any_work(result, flag, message)


def test_evaluate_refuses_an_output_it_could_not_write_and_splits_that_cannot_mix(vqa_folder, tmp_path):
    base = ["evaluate", "--clean-train", vqa_folder, "--test", vqa_folder, "--zoo-size", "test", "--victim", "cnn"]
    _refused_before_any_work(mmguard(*base, "--protected-train", vqa_folder, "-o", tmp_path), "is a folder")
    smaller = tmp_path / "smaller"
    synth.write_dataset(smaller, synth.generate("color", 8, seed=5))
    _refused_before_any_work(mmguard(*base, "--protected-train", smaller, "--protect-fraction", "0.5"),
                             "clean has 12, protected 8")
