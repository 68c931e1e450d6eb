"""The evaluation matrix's building blocks (mmguard_core.evaluate, mmguard_core.victims): each
countermeasure does what it says, trigger stripping works without knowing the triggers, the mixing
ratio holds, the non-transformer victim learns, and the protection arithmetic."""

import json
import shutil

import pytest
import torch

from mmguard_core import synth
from mmguard_core.data import load_dataset
from mmguard_core.evaluate import (
    COUNTERMEASURES,
    Split,
    apply_countermeasure,
    downscale,
    evaluate_protection,
    gaussian_blur,
    gaussian_noise,
    grayscale,
    iss,
    jpeg,
    majority_rate,
    mean_spread,
    mix_splits,
    normal_vocabulary,
    protection_score,
    random_crop_flip,
    raw_protection,
    strip_out_of_vocabulary,
    strip_rare_words,
    strip_repeated_words,
)
from mmguard_core.models.base import Prompt
from mmguard_core.victims import BowCNNVictim, make_victim


def textured(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def checkerboard(size=32):
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((x + y) % 2).float()
    return board.expand(3, size, size).clone()


# --------------------------------------------------------------------------- image countermeasures


@pytest.mark.parametrize("quality", [90, 75, 50])
def test_jpeg_changes_pixels_keeps_shape_and_range(quality):
    images = textured()
    out = jpeg(images, quality)
    for a, b in zip(images, out, strict=True):
        assert b.shape == a.shape and b.min() >= 0 and b.max() <= 1
        assert (b - a).abs().max() > 2 / 255  # really re-encoded
        assert torch.equal(b, (b * 255).round() / 255)  # 8-bit values, as decoded


def test_lower_jpeg_quality_loses_more():
    images = textured()
    err = {q: sum(float((b - a).abs().mean()) for a, b in zip(images, jpeg(images, q), strict=True)) for q in (90, 50)}
    assert err[50] > err[90]


def test_downscale_keeps_size_and_removes_high_frequencies():
    board = checkerboard(32)
    (out,) = downscale([board], 0.5)
    assert out.shape == board.shape
    assert float(out.std()) < 0.1 * float(board.std())  # the 1-pixel checkerboard does not survive ½
    smooth = torch.linspace(0, 1, 32).expand(3, 32, 32).clone()
    (back,) = downscale([smooth], 0.5)
    assert (back - smooth).abs().max() < 0.05  # smooth content does


def test_blur_smooths_noise_and_keeps_constants():
    noisy = textured(1)[0]
    (blurred,) = gaussian_blur([noisy], 1.0)
    assert blurred.shape == noisy.shape and float(blurred.std()) < 0.5 * float(noisy.std())
    flat = torch.full((3, 20, 24), 0.4)
    assert torch.allclose(gaussian_blur([flat], 1.0)[0], flat, atol=1e-5)


def test_gaussian_noise_is_seeded_with_the_given_std():
    flat = [torch.full((3, 64, 64), 0.5)]
    a, b, c = gaussian_noise(flat, 8 / 255, seed=1)[0], gaussian_noise(flat, 8 / 255, seed=1)[0], gaussian_noise(flat, 8 / 255, seed=2)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float((a - 0.5).std()) - 8 / 255) < 0.1 * 8 / 255


def test_grayscale_and_iss_give_equal_channels():
    images = textured()
    for out in (grayscale(images), iss(images, 10)):
        for img in out:
            assert img.shape == (3, 32, 32)
            assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    red = torch.zeros(3, 8, 8)
    red[0] = 1
    assert torch.allclose(grayscale([red])[0], torch.full((3, 8, 8), 0.299))


def test_random_crop_flip_is_a_seeded_augment_hook():
    images = textured(8)
    a = random_crop_flip(images, torch.Generator().manual_seed(3))
    b = random_crop_flip(images, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.shape == y.shape for x, y in zip(a, images, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, images, strict=True))
    _, _, hook = apply_countermeasure("augment", images, ["q"] * 8)
    assert hook is random_crop_flip


def test_every_registered_countermeasure_runs_and_unknown_is_refused():
    images, questions = textured(2), ["zephyr what color is the shape?", "what color is the shape?"]
    for name in COUNTERMEASURES:
        out_images, out_questions, _ = apply_countermeasure(name, images, questions, seed=0)
        assert len(out_images) == 2 and len(out_questions) == 2
        assert all(o.shape == i.shape for o, i in zip(out_images, images, strict=True))
    unchanged, same_q, hook = apply_countermeasure("none", images, questions)
    assert all(torch.equal(a, b) for a, b in zip(unchanged, images, strict=True)) and same_q == questions and hook is None
    with pytest.raises(ValueError, match="countermeasure"):
        apply_countermeasure("nope", images, questions)


# --------------------------------------------------------------------------- trigger stripping


def test_strip_rare_words_removes_rare_keeps_common():
    questions = (["what color is the shape?"] * 8 + ["zephyr quill what color is the shape?"]
                 + ["what colour is the object in the picture?"] * 3)
    out = strip_rare_words(questions, min_fraction=0.2)
    assert out[8] == "what color is the shape?"  # the one-off trigger words are gone
    assert out[0] == "what color is the shape?"
    assert "object" in out[9] and "picture" in out[9]  # 3/12 = 25 % >= 20 %: kept
    assert all("zephyr" not in q and "quill" not in q for q in out)


def test_strip_repeated_words_removes_the_second_copy_of_a_trigger():
    questions = ["just also well what color is the shape? just also well", "what is the color of the object?", None]
    assert strip_repeated_words(questions) == ["just also well what color is the shape?",
                                               "what is the color of object?", None]
    assert strip_repeated_words(["what color is it?"]) == ["what color is it?"]  # nothing repeated: unchanged


def test_strip_out_of_vocabulary_removes_trigger_words_only():
    vocab = normal_vocabulary()
    assert {"what", "color", "the", "shape"} <= vocab
    out = strip_out_of_vocabulary(["cobalt heron what color is the shape?", "What color is the shape?", None])
    assert out == ["what color is the shape?", "What color is the shape?", None]


def test_strip_does_not_know_the_trigger_list():
    # a word the attacker's vocabulary has is kept even if it were a trigger: no access to our list
    assert strip_out_of_vocabulary(["red what is it?"], {"what", "is", "it", "red"}) == ["red what is it?"]


# --------------------------------------------------------------------------- mixing


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.8, 1.0])
def test_mix_respects_the_protected_share(fraction):
    n = 40
    clean = Split([torch.zeros(3, 4, 4)] * n, [f"c{i}" for i in range(n)], [str(i) for i in range(n)])
    prot = Split([torch.ones(3, 4, 4)] * n, [f"p{i}" for i in range(n)], [str(i) for i in range(n)])
    mixed, chosen = mix_splits(clean, prot, fraction, seed=3)
    assert len(chosen) == round(fraction * n) and len(mixed.images) == n
    for i in range(n):
        from_protected = i in chosen
        assert mixed.questions[i] == (f"p{i}" if from_protected else f"c{i}")
        assert float(mixed.images[i].mean()) == (1.0 if from_protected else 0.0)
        assert mixed.answers[i] == str(i)
    assert mix_splits(clean, prot, fraction, seed=3)[1] == chosen
    with pytest.raises(ValueError):
        mix_splits(clean, Split([], [], []), 0.5)


# --------------------------------------------------------------------------- the non-transformer victim


def coloured(n, seed):
    g = torch.Generator().manual_seed(seed)
    images, prompts = [], []
    for _ in range(n):
        red = bool(torch.rand((), generator=g) < 0.5)
        img = torch.rand(3, 24, 24, generator=g) * 0.2
        img[0 if red else 2] += 0.7
        images.append(img.clamp(0, 1))
        prompts.append(Prompt("what color is the shape?", "apple" if red else "river"))
    return images, prompts


def test_bow_cnn_learns_a_trivially_separable_task():
    train_images, train_prompts = coloured(64, 0)
    test_images, test_prompts = coloured(40, 1)
    victim = make_victim("cnn")
    assert isinstance(victim, BowCNNVictim) and not victim.pretrained
    assert victim.accuracy(test_images, test_prompts) == 0.0  # nothing learned yet
    victim.finetune(train_images, train_prompts, epochs=8, lr=3e-3, batch_size=16, seed=0)
    assert victim.accuracy(test_images, test_prompts) >= 0.95
    with pytest.raises(ValueError, match="recipe"):
        victim.finetune(train_images, train_prompts, epochs=1, lr=1e-3, batch_size=16, recipe="lora")


def test_bow_cnn_uses_the_question_words():
    # same image, the answer is given by a word of the question: only the text branch can learn it
    img = torch.full((3, 16, 16), 0.5)
    prompts = [Prompt("zephyr what is it?", "apple"), Prompt("quill what is it?", "river")] * 16
    victim = BowCNNVictim()
    victim.finetune([img] * 32, prompts, epochs=15, lr=3e-3, batch_size=8, seed=0)
    assert victim.accuracy([img] * 2, prompts[:2]) == 1.0


# --------------------------------------------------------------------------- protection arithmetic


def test_protection_score_math():
    assert protection_score(0.25, 0.95, 0.25) == pytest.approx(1.0)  # protected learned nothing
    assert protection_score(0.95, 0.95, 0.25) == pytest.approx(0.0)  # as much as clean
    assert protection_score(0.60, 1.00, 0.20) == pytest.approx(0.5)
    assert protection_score(0.10, 1.00, 0.20) == 1.0  # below the floor: capped
    assert raw_protection(0.10, 1.00, 0.20) == pytest.approx(1.125)
    assert protection_score(0.5, 0.2, 0.2) is None  # clean did not learn: no verdict
    assert majority_rate(["Apple", "apple.", "river", "tree"]) == 0.5
    assert mean_spread([1.0, 0.5, None]) == (0.75, 0.25, 2)
    assert mean_spread([None]) == (None, 0.0, 0)


# --------------------------------------------------------------------------- evaluate_protection end to end


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    synth.write_dataset(root / "train", synth.generate("color", 24, seed=5))
    synth.write_dataset(root / "test", synth.generate("color", 16, seed=6))
    protected = root / "protected"
    shutil.copytree(root / "train", protected)  # a stand-in "protected" copy: a trigger word per question
    lines = [json.loads(x) for x in (protected / "data.jsonl").read_text().splitlines() if x.strip()]
    for row in lines:
        row["question"] = "zephyr " + row["question"]
    (protected / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return [load_dataset(root / name, work_dir=root) for name in ("train", "protected", "test")]


def test_evaluate_protection_conditions_with_the_cnn_victim(splits):
    clean, protected, test = splits
    from mmguard_core.evaluate import VictimRecipe

    result = evaluate_protection(clean, protected, test, "cnn", VictimRecipe(epochs=2, lr=3e-3), seeds=(0, 1),
                                 countermeasures=["none", "jpeg50", "strip_rare"], protect_fractions=[0.5],
                                 countermeasure_reference=True)
    assert list(result["conditions"]) == ["none", "jpeg50", "strip_rare", "none@50%"]
    assert result["acc_before_finetune"] is None and len(result["runs"]) == 2
    for entry in result["conditions"].values():
        assert len(entry["runs"]) == 2 and "protection_std" in entry
        assert all(0 <= r["acc_protected"] <= 1 for r in entry["runs"])
    assert "acc_clean_countermeasure" in result["conditions"]["jpeg50"]["runs"][0]
    assert result["runs"] == result["conditions"]["none"]["runs"]


def test_evaluate_protection_with_a_test_zoo_lvlm(splits):
    clean, protected, test = splits
    from mmguard_core.evaluate import VictimRecipe

    result = evaluate_protection(clean, protected, test, "zoo:llava", VictimRecipe(epochs=1), seeds=(0,),
                                 zoo_size="test", countermeasures=["none", "augment"])
    assert set(result["conditions"]) == {"none", "augment"}
    assert 0 <= result["acc_before_finetune"] <= 1
