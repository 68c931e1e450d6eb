"""mmguard_core.synth: determinism, vocabulary, sizes, contrast, dataset layout (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mmguard_core import synth


def _pixels(sample: synth.SynthSample) -> np.ndarray:
    return np.asarray(sample.image)


@pytest.mark.parametrize("task", synth.TASKS)
def test_deterministic_by_seed(task):
    a = synth.generate(task, 12, seed=3)
    b = synth.generate(task, 12, seed=3)
    c = synth.generate(task, 12, seed=4)
    assert [(s.question, s.answer) for s in a] == [(s.question, s.answer) for s in b]
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, c, strict=True))
    # a longer list starts with the shorter one
    longer = synth.generate(task, 20, seed=3)
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, longer[:12], strict=True))


@pytest.mark.parametrize("task", synth.TASKS)
def test_answers_questions_and_chance(task):
    samples = synth.generate(task, 200, seed=1)
    if task == "caption":
        assert all(s.question is None and s.task == "caption" for s in samples)
        assert synth.chance_accuracy(task) == 0.0
        assert len({s.answer for s in samples}) > 20
        return
    allowed = set(synth.answers(task))
    assert {s.answer for s in samples} <= allowed
    for s in samples:
        assert s.question in synth.QUESTION_TEMPLATES[s.task]
        assert s.answer == (s.attributes[s.task] if s.task != "count" else s.attributes["count"])
    if task != "mixed":
        assert {s.answer for s in samples} == allowed  # every answer occurs in 200 draws
        assert synth.chance_accuracy(task) == pytest.approx(1 / len(allowed))
        assert len({s.question for s in samples}) >= 3  # several templates
    else:
        assert {s.task for s in samples} == set(synth.VQA_TASKS)
        assert 0 < synth.chance_accuracy(task) < 1


def test_vocabulary_covers_every_emitted_word():
    vocab = set(synth.vocabulary())
    for task in synth.TASKS:
        for s in synth.generate(task, 300, seed=7):
            texts = [s.answer] + ([s.question] if s.question else [])
            for text in texts:
                assert set(synth._words(text)) <= vocab, text
    for text in synth.CAPTION_INSTRUCTIONS:
        assert set(synth._words(text)) <= vocab
    assert vocab == set(synth.vocabulary())  # no placeholders leak
    assert not any("{" in w for w in vocab)


def test_sizes_and_non_square():
    for size, expected in [(32, (32, 32)), (48, (48, 48)), (64, (64, 64)), ((48, 32), (48, 32))]:
        for s in synth.generate("mixed", 5, seed=0, image_size=size):
            assert s.image.size == expected and s.image.mode == "RGB"
    with pytest.raises(ValueError):
        synth.generate("color", 1, seed=0, image_size=8)
    with pytest.raises(ValueError):
        synth.generate("nope", 1, seed=0)
    with pytest.raises(ValueError):
        synth.generate("color", 1, seed=0, contrast=0.0)


def test_contrast_makes_colours_subtle():
    def saturation(contrast):
        values = []
        for s in synth.generate("color", 40, seed=5, contrast=contrast):
            px = _pixels(s).astype(np.float32)
            values.append(float((px.max(axis=2) - px.min(axis=2)).max()))
        return np.mean(values)

    assert saturation(0.3) < 0.5 * saturation(1.0)
    ranged = synth.generate("color", 30, seed=5, contrast=(0.3, 1.0))
    assert len({round(s.attributes["contrast"], 3) for s in ranged}) > 10


def test_write_dataset_layout(tmp_path):
    vqa = synth.generate("color", 5, seed=2)
    path = synth.write_dataset(tmp_path / "vqa", vqa)
    assert path == tmp_path / "vqa" / "data.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["image"] for r in records] == [f"images/{k:06d}.png" for k in range(1, 6)]
    for r, s in zip(records, vqa, strict=True):
        assert r == {"image": r["image"], "question": s.question, "answer": s.answer}
        assert np.array_equal(np.asarray(Image.open(tmp_path / "vqa" / r["image"])), _pixels(s))  # lossless
    caps = synth.generate("caption", 3, seed=2)
    path = synth.write_dataset(tmp_path / "cap", caps, annotation="captions.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [set(r) for r in records] == [{"image", "caption"}] * 3
    assert [r["caption"] for r in records] == [s.answer for s in caps]


def test_fast_enough():
    synth.generate("mixed", 50, seed=0)  # warm the grid cache
    start = time.perf_counter()
    synth.generate("mixed", 1000, seed=1)
    rate = 1000 / (time.perf_counter() - start)
    assert rate > 500, rate  # ~5000/s measured on one idle core; lenient for shared machines


def test_no_torch_import():
    code = "import sys, mmguard_core.synth as s; s.generate('mixed', 3, 0); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
