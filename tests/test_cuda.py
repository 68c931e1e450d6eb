"""The engine on a CUDA device: protection (shared noise, trigger search, binding losses), the
verification and the evaluation's victims, each run on the GPU and checked against the same run on the
CPU; and checkpoint surrogates in bfloat16 (the setting for real LVLMs), on the CPU too. The CUDA
tests skip where torch sees no CUDA device (CI and this workplace's machines have none); on a GPU
machine: `pytest tests/test_cuda.py` or `bash benchmarks/gpu_check.sh` (docs/evaluation.md, "On a GPU")."""

from __future__ import annotations

import pytest
import torch

from mmguard_core import synth
from mmguard_core.config import preset
from mmguard_core.data import load_dataset
from mmguard_core.evaluate import VictimRecipe, evaluate_protection
from mmguard_core.models.zoo import build_zoo
from mmguard_core.pipeline import run_protection
from mmguard_core.victims import make_victim

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TINY = {"zoo_size": "test", "surrogates": ["zoo:llava", "zoo:qwen2_vl"], "shared_steps": 2, "sample_steps": 1,
        "bilevel_rounds": 1, "inner_steps": 1, "trigger_candidates": 4, "batch_size": 8}


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    synth.write_dataset(root / "train", synth.generate("color", 48, seed=11, image_size=32))
    synth.write_dataset(root / "test", synth.generate("color", 24, seed=12, image_size=32))
    return root


@needs_cuda
def test_protection_runs_on_the_gpu_within_the_budget(colour, tmp_path):
    config = preset("fast", **TINY, device="cuda")
    report = run_protection(colour / "train", tmp_path / "out", config)
    assert report["device"] == "cuda"
    assert 0 < report["summary"]["linf_max"] <= config.epsilon + 1e-9
    assert report["trigger"]["samples_with_trigger"] == 48
    assert load_dataset(tmp_path / "out", work_dir=tmp_path).samples  # a readable protected copy


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_default_targeted_noise_on_the_gpu(colour, tmp_path, dtype):
    """balanced's path: clean-task copies cloned and fine-tuned on the GPU, then targeted PGD."""
    config = preset("balanced", **(TINY | {"shared_steps": 0, "sample_objective": "targeted"}), target_steps=2,
                    verify=False, device="cuda", dtype=dtype)
    report = run_protection(colour / "train", tmp_path / "out", config)
    assert report["device"] == "cuda" and report["sample_noise"]["objective"] == "targeted"
    assert 0 < report["summary"]["linf_max"] <= config.epsilon + 1e-9


@needs_cuda
def test_auto_takes_the_gpu(colour, tmp_path):
    report = run_protection(colour / "train", tmp_path / "out", preset("fast", **TINY, device="auto"))
    assert report["device"] == "cuda"


@needs_cuda
def test_the_gpu_computes_the_same_losses_as_the_cpu(colour, tmp_path):
    """Same surrogates, same data: the first shared-stage loss (before any step) is the same number on
    both devices up to float rounding; a device or dtype slip in an adapter would show here."""
    cpu = run_protection(colour / "train", tmp_path / "cpu", preset("fast", **TINY, device="cpu"))
    gpu = run_protection(colour / "train", tmp_path / "gpu", preset("fast", **TINY, device="cuda"))
    first_cpu, first_gpu = cpu["loss_curve"]["shared"][0], gpu["loss_curve"]["shared"][0]
    assert first_gpu == pytest.approx(first_cpu, rel=2e-2)


@needs_cuda
def test_binding_losses_on_the_gpu(colour, tmp_path):
    """BPH and CRS read the attention maps: eager attention must hold on the GPU too."""
    config = preset("fast", **TINY, device="cuda", bph_weight=1.0, crs_weight=1.0, binding_steps=2)
    report = run_protection(colour / "train", tmp_path / "out", config)
    assert report["device"] == "cuda" and 0 < report["summary"]["linf_max"] <= config.epsilon + 1e-9
    assert all(torch.isfinite(torch.tensor(report["loss_curve"]["sample"])))


@needs_cuda
def test_verification_fine_tunes_its_victim_on_the_gpu(colour, tmp_path):
    config = preset("fast", **TINY, device="cuda", verify=True, verify_victim="zoo:paligemma", verify_epochs=1.0)
    verification = run_protection(colour / "train", tmp_path / "out", config)["verification"]
    assert verification["status"] == "done" and verification["victim"] == "zoo:paligemma"


@needs_cuda
@pytest.mark.parametrize("victim,recipe", [("zoo:llava", "full"), ("zoo:qwen2_vl", "lora"), ("cnn", "full")])
def test_evaluation_victims_learn_on_the_gpu(colour, tmp_path, victim, recipe):
    train, test = (load_dataset(colour / name, work_dir=tmp_path) for name in ("train", "test"))
    result = evaluate_protection(train, train, test, victim, VictimRecipe(epochs=2, lr=3e-3, recipe=recipe),
                                 seeds=(0,), zoo_size="test", device="cuda")
    assert result["device"] == "cuda"
    run = result["runs"][0]
    assert 0 <= run["acc_clean"] <= 1 and run["acc_protected"] == pytest.approx(run["acc_clean"], abs=0.25)


@needs_cuda
def test_a_victim_lives_on_the_gpu():
    victim = make_victim("zoo:llava", "test", device="cuda")
    assert next(victim.adapter.model.parameters()).is_cuda


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_checkpoint_surrogates_in_bfloat16(colour, tmp_path, device):
    """Real LVLMs load from a folder (FAMILY:PATH) in bfloat16; the zoo's folders are such checkpoints.
    The pixels stay float32 (the bound is applied to them), the models compute in bfloat16."""
    folders = build_zoo(size="test", families=["llava", "qwen2_vl"])
    config = preset("fast", **(TINY | {"surrogates": [f"{f}:{p}" for f, p in folders.items()]}), device=device,
                    dtype="bfloat16", bph_weight=1.0, crs_weight=1.0)
    report = run_protection(colour / "train", tmp_path / "out", config)
    assert report["device"] == device and report["config"]["dtype"] == "bfloat16"
    assert 0 < report["summary"]["linf_max"] <= config.epsilon + 1e-9
    assert all(torch.isfinite(torch.tensor(report["loss_curve"]["shared"])))
