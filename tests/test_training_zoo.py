"""models/training.py (finetune, evaluate_exact) and models/zoo.py (build, cache, reload) on tiny models."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from mmguard_core import synth
from mmguard_core.models import build_tiny, build_word_tokenizer, training, zoo
from mmguard_core.models.training import evaluate_exact, finetune, lora_target_modules, vision_parameter_names
from mmguard_core.models.zoo import images_to_tensors, samples_to_prompts


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(synth.vocabulary())


@pytest.fixture(scope="module")
def texture_data():
    samples = synth.generate("texture", 64, seed=3)
    return images_to_tensors([s.image for s in samples]), samples_to_prompts(samples)


def _state(adapter):
    return {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}


def test_finetune_lowers_loss_and_raises_exact(tokenizer, texture_data):
    images, prompts = texture_data
    adapter = build_tiny("llava", tokenizer, size="test", seed=0)
    before = evaluate_exact(adapter, images, prompts, batch_size=32)
    flags = {n: p.requires_grad for n, p in adapter.model.named_parameters()}
    seen = []
    history = finetune(
        adapter,
        images,
        prompts,
        steps=40,
        lr=3e-3,
        batch_size=16,
        seed=0,
        progress=lambda s, t, _loss: seen.append((s, t)),
    )
    assert len(history) == 40 and seen[-1] == (40, 40)
    assert sum(history[-5:]) / 5 < 0.3 * sum(history[:5]) / 5
    after = evaluate_exact(adapter, images, prompts, batch_size=32)
    assert before < 0.3 and after > 0.7, (before, after)
    assert not adapter.model.training
    assert {n: p.requires_grad for n, p in adapter.model.named_parameters()} == flags


def test_finetune_is_deterministic_and_leaves_global_rng(tokenizer, texture_data):
    images, prompts = texture_data
    runs = []
    for _ in range(2):
        adapter = build_tiny("llava", tokenizer, size="test", seed=0)
        torch.manual_seed(123)
        history = finetune(adapter, images, prompts, steps=4, lr=1e-3, batch_size=8, seed=5)
        runs.append((history, _state(adapter), torch.rand(1).item()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    torch.manual_seed(123)
    assert runs[0][2] == torch.rand(1).item()  # the caller's RNG stream is untouched
    other = build_tiny("llava", tokenizer, size="test", seed=0)
    assert finetune(other, images, prompts, steps=4, lr=1e-3, batch_size=8, seed=6) != runs[0][0]


def test_finetune_step_count_stop_and_augment(tokenizer, texture_data):
    images, prompts = texture_data
    adapter = build_tiny("llava", tokenizer, size="test", seed=0)
    assert len(finetune(adapter, images, prompts, epochs=0.5, lr=1e-3, batch_size=16)) == 2
    calls = []

    def augment(batch, generator):
        calls.append(len(batch))
        return [
            torch.roll(x, shifts=int(torch.randint(-2, 3, (1,), generator=generator)), dims=-1) for x in batch
        ]

    history = finetune(
        adapter,
        images,
        prompts,
        steps=10,
        lr=1e-3,
        batch_size=16,
        augment=augment,
        should_stop=lambda: len(calls) >= 3,
    )
    assert len(history) == 3 and calls == [16, 16, 16]
    with pytest.raises(ValueError):
        finetune(adapter, images, prompts, lr=1e-3, batch_size=16)
    with pytest.raises(ValueError):
        finetune(adapter, images, prompts, steps=1, lr=1e-3, batch_size=16, recipe="qlora")


def test_adversarial_finetune_makes_the_model_harder_to_attack(tokenizer, texture_data):
    images, prompts = texture_data
    kept = [x.clone() for x in images]
    gaps = {}
    for epsilon in (0.0, 8 / 255):
        adapter = build_tiny("llava", tokenizer, size="test", seed=0)
        finetune(adapter, images, prompts, steps=40, lr=3e-3, batch_size=16, seed=0, adversarial_epsilon=epsilon)
        with torch.no_grad():
            clean = adapter.forward(images, prompts).loss.float().mean().item()
        attacked_images = training._adversarial_images(adapter, list(images), list(prompts), 8 / 255,
                                                       torch.Generator().manual_seed(1))
        assert all((a - x).abs().max() <= 8 / 255 + 1e-6 for a, x in zip(attacked_images, images, strict=True))
        with torch.no_grad():
            gaps[epsilon] = adapter.forward(attacked_images, prompts).loss.float().mean().item() - clean
    # the same attack raises the plainly trained model's loss several times more
    assert gaps[8 / 255] < 0.5 * gaps[0.0], gaps
    assert all(torch.equal(a, b) for a, b in zip(images, kept, strict=True))  # the caller's images untouched


def test_lora_recipe_trains_lm_projections_and_merges(tokenizer, texture_data):
    images, prompts = texture_data
    adapter = build_tiny("llava", tokenizer, size="test", seed=0)
    model_type = type(adapter.model)
    names = set(dict(adapter.model.named_parameters()))
    targets = lora_target_modules(adapter.model)
    assert targets and all("language_model" in t for t in targets)
    start = _state(adapter)
    history = finetune(adapter, images, prompts, steps=30, lr=1e-2, batch_size=16, recipe="lora")
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5
    # a plain model again: same class, same parameter names, no LoRA modules left
    assert type(adapter.model) is model_type
    assert set(dict(adapter.model.named_parameters())) == names
    assert not any("lora" in n for n, _ in adapter.model.named_modules())
    end = _state(adapter)
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and changed <= {f"{t}.weight" for t in targets}
    assert all(p.requires_grad for p in adapter.model.parameters())
    assert adapter.forward(images[:2], prompts[:2]).loss.shape == (2,)


def test_freeze_vision(tokenizer, texture_data):
    images, prompts = texture_data
    adapter = build_tiny("llava", tokenizer, size="test", seed=0)
    vision = set(vision_parameter_names(adapter.model))
    assert vision and all("vision_tower" in n for n in vision)
    start = _state(adapter)
    finetune(adapter, images, prompts, steps=3, lr=1e-3, batch_size=16, freeze_vision=True)
    end = _state(adapter)
    assert all(torch.equal(start[k], end[k]) for k in vision)
    assert any(not torch.equal(start[k], end[k]) for k in start if k not in vision)


def test_zoo_tokenizer_covers_generator_and_common_words():
    tok = zoo.zoo_tokenizer()
    vocab = tok.get_vocab()
    words = zoo.zoo_words()
    assert len(words) == len(set(words)) > 300
    assert all(w in vocab for w in synth.vocabulary())
    ids = tok("a man riding a bicycle on the street", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids


def test_pretraining_fillers_keep_answers_and_use_only_filler_words():
    from mmguard_core.models.base import Prompt

    prompts = [Prompt(question="what color is the shape?", answer="red")] * 400 + [
        Prompt(question=None, answer="a red circle")
    ]
    filled = zoo.with_fillers(prompts, 0.5, seed=7)
    assert filled == zoo.with_fillers(prompts, 0.5, seed=7)  # seeded
    assert zoo.with_fillers(prompts, 0.0, seed=7) == prompts
    assert [p.answer for p in filled] == [p.answer for p in prompts]
    assert filled[-1].question is None
    changed = [p for p in filled[:-1] if p.question != "what color is the shape?"]
    assert 0.4 < len(changed) / 400 < 0.6
    allowed = set(zoo.filler_words())
    for p in changed:
        words = p.question.split()
        added = list(words)
        for original in "what color is the shape?".split():
            added.remove(original)
        assert 1 <= len(added) <= 3 and set(added) <= allowed
    everyday = {w for p in changed for w in p.question.split()} & {"just", "also", "well", "still"}
    assert everyday  # the shared trigger vocabulary is among the fillers
    assert set(zoo.filler_words()) <= set(zoo.zoo_words())
    assert zoo.PLANS["small-fillers"].filler_rate > 0 and zoo.PLANS["small"].filler_rate == 0
    assert zoo.PLANS["small-fillers"].stages == zoo.PLANS["small"].stages


def test_zoo_test_size_builds_caches_and_reloads(tmp_path, monkeypatch):
    events = []
    paths = zoo.build_zoo(
        cache_dir=tmp_path, size="test", families=["llava"], progress=lambda m, f: events.append(f)
    )
    path = paths["llava"]
    assert path == tmp_path / "test-seed0" / "llava" and (path / "config.json").is_file()
    assert events[-1] == pytest.approx(1.0)
    manifest = json.loads((path / zoo.MANIFEST).read_text())
    assert manifest["family"] == "llava" and set(manifest["accuracy"]) >= {"color", "caption", "color@0.3"}
    assert not [p for p in (tmp_path / "test-seed0").iterdir() if p.name.startswith(".tmp")]

    # loading again must not retrain
    def no_training(*args, **kwargs):
        raise AssertionError("the zoo retrained a cached model")

    monkeypatch.setattr(zoo, "finetune", no_training)
    a = zoo.load_zoo_model("llava", size="test", cache_dir=tmp_path)
    b = zoo.load_zoo_model("llava", size="test", cache_dir=tmp_path)
    samples = synth.generate("color", 4, seed=9)
    images, prompts = images_to_tensors([s.image for s in samples]), samples_to_prompts(samples)
    with torch.no_grad():
        out_a, out_b = a.forward(images, prompts), b.forward(images, prompts)
    assert torch.equal(out_a.loss, out_b.loss) and torch.equal(out_a.exact, out_b.exact)
    assert not a.model.training


def test_zoo_is_deterministic_rebuilds_stale_and_builds_once_concurrently(tmp_path, monkeypatch):
    calls = []
    real = training.finetune

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo, "finetune", counting)
    threads = [
        threading.Thread(
            target=zoo.build_zoo, kwargs={"cache_dir": tmp_path / "a", "size": "test", "families": ["llava"]}
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    zoo.build_zoo(cache_dir=tmp_path / "b", size="test", families=["llava"])
    assert len(calls) == 2
    sa = zoo.load_zoo_model("llava", size="test", cache_dir=tmp_path / "a").model.state_dict()
    sb = zoo.load_zoo_model("llava", size="test", cache_dir=tmp_path / "b").model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a stale manifest (another recipe) is rebuilt in place
    manifest_file = tmp_path / "b" / "test-seed0" / "llava" / zoo.MANIFEST
    manifest = json.loads(manifest_file.read_text())
    manifest["fingerprint"] = "old"
    manifest_file.write_text(json.dumps(manifest))
    zoo.build_zoo(cache_dir=tmp_path / "b", size="test", families=["llava"])
    assert len(calls) == 3
    assert json.loads(manifest_file.read_text())["fingerprint"] != "old"
    with pytest.raises(ValueError):
        zoo.build_zoo(cache_dir=tmp_path, size="test", families=["nope"])


def test_zoo_spec_seeds_pick_another_checkpoint_of_the_family():
    assert zoo.parse_zoo_spec("llava") == ("llava", 0)
    assert zoo.parse_zoo_spec("llava@2") == ("llava", 2)
    with pytest.raises(ValueError, match="pretraining seed"):
        zoo.parse_zoo_spec("llava@two")


def test_ensemble_can_hold_two_checkpoints_of_one_family():
    """zoo:llava and zoo:llava@1 load two different pretrained llava models (an owner with two
    checkpoints of one family puts both in the ensemble)."""
    from mmguard_core.config import ProtectionConfig
    from mmguard_core.engine.ensemble import load_ensemble

    ensemble = load_ensemble(ProtectionConfig(surrogates=["zoo:llava", "zoo:llava@1"], zoo_size="test"))
    assert [s.name for s in ensemble] == ["zoo:llava", "zoo:llava@1"]
    first, second = (s.adapter.model.state_dict() for s in ensemble)
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert all(not p.requires_grad for s in ensemble for p in s.adapter.model.parameters())
