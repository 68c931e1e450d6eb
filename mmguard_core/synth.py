"""Deterministic synthetic image-question-answer and caption data (numpy + Pillow, no torch).

Every image is one or more coloured shapes on a grey background that carries a texture
(plain, striped, checkered, dotted). All attributes vary in every image; the task only decides
which attribute the question asks about, so the tasks share one image distribution:

- ``color``    what colour is the shape?          red, green, blue, yellow, purple, orange
- ``shape``    what shape is in the image?        circle, square, triangle, diamond, cross
- ``count``    how many shapes are there?         one, two, three, four
- ``position`` where is the shape?                left, right, top, bottom, center
- ``texture``  what pattern does the background have?  plain, striped, checkered, dotted
- ``mixed``    one of the five above per sample (question says which)
- ``caption``  no question; the answer is a caption, e.g.
               "a red circle on the left of a striped background"

``contrast`` scales how far the true features stand out: 1.0 gives saturated colours and strong
patterns; 0.3 gives subtle colours (closer to grey) and faint background patterns, a harder true
feature for a learner (and so an easier target for a planted shortcut to win against).
``contrast`` may also be a ``(low, high)`` range, drawn uniformly per sample.

Determinism: sample ``i`` of ``generate(task, n, seed, ...)`` depends only on
``(task, seed, i, image_size, contrast)``, so a longer list starts with the shorter one.

Seed conventions (documented here so data sets never collide): benchmarks and tests use seeds
below 10_000; the tiny model zoo (``mmguard_core.models.zoo``) pretrains on seeds 10_000 and up.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "SYNTH_VERSION",
    "TASKS",
    "VQA_TASKS",
    "COLORS",
    "SHAPES",
    "COUNTS",
    "POSITIONS",
    "TEXTURES",
    "QUESTION_TEMPLATES",
    "CAPTION_INSTRUCTIONS",
    "SynthSample",
    "answers",
    "chance_accuracy",
    "generate",
    "vocabulary",
    "write_dataset",
]

# bumped whenever the same (task, seed, i, size, contrast) would render differently (the zoo cache
# fingerprint includes it, so pretrained zoo models are rebuilt on new data)
SYNTH_VERSION = 1

# saturated RGB in [0, 1]; contrast blends them towards the background grey
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (1.00, 0.55, 0.05),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {s: s + "es" if s.endswith("s") else s + "s" for s in SHAPES}
COUNTS: tuple[str, ...] = ("one", "two", "three", "four")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")

VQA_TASKS: tuple[str, ...] = ("color", "shape", "count", "position", "texture")
TASKS: tuple[str, ...] = VQA_TASKS + ("mixed", "caption")

QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": (
        "what color is the shape?",
        "which colour is the object in the picture?",
        "what is the color of the object?",
        "what colour is the shape in the image?",
        "which color does the shape have?",
    ),
    "shape": (
        "what shape is in the image?",
        "which shape is shown in the picture?",
        "what is the shape of the object?",
        "what kind of shape is in the picture?",
        "which object is shown?",
    ),
    "count": (
        "how many shapes are there?",
        "how many objects are in the picture?",
        "what is the number of shapes in the image?",
        "how many shapes does the image show?",
        "count the objects in the picture.",
    ),
    "position": (
        "where is the shape?",
        "where is the object in the picture?",
        "in which part of the image is the shape?",
        "what is the position of the shape?",
        "where in the image is the object?",
    ),
    "texture": (
        "what pattern does the background have?",
        "what is the texture of the background?",
        "which pattern is behind the shape?",
        "how is the background patterned?",
        "what does the background look like?",
    ),
}

# instructions a caption model is trained with (the data set itself stores no question)
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "describe the image.",
    "write a short caption for the picture.",
    "what is shown in the image?",
)

_POSITION_PHRASES: dict[str, str] = {
    "left": "on the left of",
    "right": "on the right of",
    "top": "at the top of",
    "bottom": "at the bottom of",
    "center": "in the center of",
}
# fractional centres of the five positions (x, y)
_POSITION_CENTERS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
_CAPTION_TEMPLATES_ONE: tuple[str, ...] = (
    "a {color} {shape} {where} a {texture} background",
    "a {texture} background with a {color} {shape} {where_short}",
    "there is a {color} {shape} {where} the image on a {texture} background",
)
_CAPTION_TEMPLATES_MANY: tuple[str, ...] = (
    "{count} {shapes} on a {texture} background",
    "a {texture} background with {count} {shapes}",
    "there are {count} {shapes} on a {texture} background",
)
_WHERE_SHORT: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

_TASK_ANSWERS: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "count": COUNTS,
    "position": POSITIONS,
    "texture": TEXTURES,
}


@dataclass
class SynthSample:
    """One generated sample. ``question`` is None for captions; ``answer`` is the answer or the caption.

    ``task`` is the attribute asked about (for ``mixed`` the task drawn for this sample; ``caption``
    for captions) and ``attributes`` holds the ground truth of the whole scene (colour and shape of
    the first object, count, position (None when several objects), texture, contrast)."""

    image: Image.Image
    question: str | None
    answer: str
    task: str
    attributes: dict[str, Any] = field(default_factory=dict)


def answers(task: str) -> list[str]:
    """The closed answer set of a VQA task (``mixed``: the union); captions have none (empty list)."""
    _check_task(task)
    if task == "caption":
        return []
    if task == "mixed":
        return [a for t in VQA_TASKS for a in _TASK_ANSWERS[t]]
    return list(_TASK_ANSWERS[task])


def chance_accuracy(task: str) -> float:
    """Exact-match accuracy of guessing: 1 / number of answers of the task.

    ``mixed``: the mean of the five tasks' chance levels (a guesser that reads which attribute the
    question asks for, but not the image). ``caption``: 0.0 (exact caption match by chance is
    negligible)."""
    _check_task(task)
    if task == "caption":
        return 0.0
    if task == "mixed":
        return float(np.mean([1.0 / len(_TASK_ANSWERS[t]) for t in VQA_TASKS]))
    return 1.0 / len(_TASK_ANSWERS[task])


_WORD_RE = re.compile(r"\{[a-z_]+\}|[a-z']+|[?.,!]")


def _words(text: str) -> list[str]:
    """Words and punctuation marks of a text, template placeholders kept as '{name}'."""
    return _WORD_RE.findall(text.lower())


def vocabulary() -> list[str]:
    """Every word (lower case) and punctuation mark the generator can emit, sorted, without duplicates:
    question templates, caption instructions and templates, and all answers."""
    texts: list[str] = []
    for templates in QUESTION_TEMPLATES.values():
        texts.extend(templates)
    texts.extend(CAPTION_INSTRUCTIONS)
    texts.extend(_CAPTION_TEMPLATES_ONE)
    texts.extend(_CAPTION_TEMPLATES_MANY)
    texts.extend(_POSITION_PHRASES.values())
    texts.extend(_WHERE_SHORT.values())
    for values in _TASK_ANSWERS.values():
        texts.extend(values)
    texts.extend(SHAPE_PLURALS.values())
    words: set[str] = set()
    for text in texts:
        for w in _words(text):
            if not (w.startswith("{") and w.endswith("}")):
                words.add(w)
    return sorted(words)


# --------------------------------------------------------------------------- rendering


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """int -> square; (width, height) like PIL."""
    if isinstance(image_size, int | np.integer):
        w = h = int(image_size)
    else:
        w, h = (int(v) for v in image_size)
    if w < 16 or h < 16:
        raise ValueError(f"image_size: at least 16 px each side, got {w}x{h}")
    return h, w


_GRID_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    key = (h, w)
    if key not in _GRID_CACHE:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        _GRID_CACHE[key] = (yy + 0.5, xx + 0.5)
    return _GRID_CACHE[key]


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx = xx - cx
    dy = yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = 0.82 * r
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":
        # apex at the top, base at the bottom; half-width grows from 0 to r
        top, bottom = -r, 0.85 * r
        inside_y = (dy >= top) & (dy <= bottom)
        half = (dy - top) / (bottom - top) * r
        return inside_y & (np.abs(dx) <= half)
    if shape == "cross":
        arm = max(0.34 * r, 1.0)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


_PATTERN_CACHE: dict[tuple[int, int, str, int, int], np.ndarray] = {}


def _pattern(texture: str, h: int, w: int, variant: int, phase: int) -> np.ndarray:
    """(h, w) float32 texture in {-1, +1} (cached); `variant` 0/1 = horizontal/vertical stripes."""
    key = (h, w, texture, variant, phase)
    cached = _PATTERN_CACHE.get(key)
    if cached is not None:
        return cached
    period = max(4, int(round(min(h, w) / 8)))
    iy, ix = np.mgrid[0:h, 0:w]
    if texture == "striped":
        coord = iy if variant == 0 else ix
        pattern = ((coord + phase) // (period // 2)) % 2
    elif texture == "checkered":
        pattern = (((iy + phase) // (period // 2)) + ((ix + phase) // (period // 2))) % 2
    elif texture == "dotted":
        dy = (iy + phase) % period - (period - 1) / 2
        dx = (ix + phase) % period - (period - 1) / 2
        pattern = (dy * dy + dx * dx <= (period / 4) ** 2 + 0.26).astype(np.int64)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    out = (pattern.astype(np.float32) - 0.5) * 2.0
    out.setflags(write=False)
    _PATTERN_CACHE[key] = out
    return out


def _background(
    texture: str, h: int, w: int, grey: float, amplitude: float, u1: float, u2: float
) -> np.ndarray:
    """Grey background plus the texture at `amplitude`; u1, u2 in [0, 1) choose phase and orientation."""
    if texture == "plain":
        return np.full((h, w), grey, dtype=np.float32)
    period = max(4, int(round(min(h, w) / 8)))
    phase = int(u1 * period)
    variant = int(u2 * 2) if texture == "striped" else 0
    return grey + amplitude * _pattern(texture, h, w, variant, phase)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task: unknown {task!r}; choose one of {', '.join(TASKS)}")


_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_COLOR_RGB: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float32) for k, v in COLORS.items()}


def _render_one(
    task: str,
    rng: np.random.Generator,
    h: int,
    w: int,
    contrast: float,
) -> SynthSample:
    # every random choice comes from one vector of uniforms (one generator call per sample: fast)
    u = rng.random(40)

    def pick(k: int, options: Sequence[Any]) -> Any:
        return options[min(int(u[k] * len(options)), len(options) - 1)]

    def between(k: int, low: float, high: float) -> float:
        return low + (high - low) * float(u[k])

    sub = pick(0, VQA_TASKS) if task == "mixed" else task
    color = pick(1, _COLOR_NAMES)
    shape = pick(2, SHAPES)
    texture = pick(3, TEXTURES)
    # the count task (and a share of captions) shows several objects; other tasks show one
    if sub == "count":
        count = pick(4, (1, 2, 3, 4))
    elif sub == "caption":
        count = 1 if u[4] < 0.6 else pick(5, (2, 3, 4))
    else:
        count = 1
    position = pick(6, POSITIONS) if count == 1 else None

    grey = between(7, 0.38, 0.62)
    amplitude = 0.22 * contrast * between(8, 0.8, 1.0)
    canvas = _background(texture, h, w, grey, amplitude, float(u[9]), float(u[10]))
    img = np.repeat(canvas[:, :, None], 3, axis=2)
    yy, xx = _grid(h, w)
    side = min(h, w)

    def paint(shape_name: str, color_name: str, cx: float, cy: float, r: float) -> None:
        mix = grey + contrast * (_COLOR_RGB[color_name] - grey)
        img[_shape_mask(shape_name, yy, xx, cx, cy, r)] = mix

    if count == 1:
        fx, fy = _POSITION_CENTERS[position]  # type: ignore[index]
        cx = (fx + between(11, -0.05, 0.05)) * w
        cy = (fy + between(12, -0.05, 0.05)) * h
        paint(shape, color, cx, cy, side * between(13, 0.16, 0.21))
        colors_drawn = [color]
        shapes_drawn = [shape]
    else:
        # distinct cells of a 3x3 grid, each object a random colour; all objects share the shape
        cells = np.argsort(u[14:23], kind="stable")[:count]
        colors_drawn = [color] + [pick(23 + k, _COLOR_NAMES) for k in range(count - 1)]
        shapes_drawn = [shape] * count
        for k, cell in enumerate(cells):
            gy, gx = divmod(int(cell), 3)
            cx = (gx + 0.5 + between(26 + k, -0.1, 0.1)) * w / 3
            cy = (gy + 0.5 + between(30 + k, -0.1, 0.1)) * h / 3
            paint(shape, colors_drawn[k], cx, cy, side * between(34 + k, 0.10, 0.13))

    pixels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    attributes: dict[str, Any] = {
        "color": color,
        "colors": colors_drawn,
        "shape": shape,
        "shapes": shapes_drawn,
        "count": COUNTS[count - 1],
        "position": position,
        "texture": texture,
        "contrast": contrast,
    }
    if sub == "caption":
        if count == 1:
            template = pick(38, _CAPTION_TEMPLATES_ONE)
            caption = template.format(
                color=color,
                shape=shape,
                texture=texture,
                where=_POSITION_PHRASES[position],  # type: ignore[index]
                where_short=_WHERE_SHORT[position],  # type: ignore[index]
            )
        else:
            template = pick(38, _CAPTION_TEMPLATES_MANY)
            caption = template.format(count=COUNTS[count - 1], shapes=SHAPE_PLURALS[shape], texture=texture)
        return SynthSample(image=image, question=None, answer=caption, task="caption", attributes=attributes)
    templates = QUESTION_TEMPLATES[sub]
    question = pick(39, templates)
    answer = {
        "color": color,
        "shape": shape,
        "count": COUNTS[count - 1],
        "position": position,
        "texture": texture,
    }[sub]
    return SynthSample(image=image, question=question, answer=str(answer), task=sub, attributes=attributes)


_TASK_SALT = {t: i for i, t in enumerate(TASKS)}


def generate(
    task: str,
    n: int,
    seed: int,
    image_size: int | Sequence[int] = 32,
    contrast: float | Sequence[float] = 1.0,
) -> list[SynthSample]:
    """``n`` samples of ``task`` (see module doc), deterministic in ``seed``.

    ``image_size``: an int (square) or ``(width, height)``; at least 16 px a side.
    ``contrast``: in (0, 1], or a ``(low, high)`` range drawn per sample."""
    _check_task(task)
    if n < 0:
        raise ValueError("n: must be >= 0")
    h, w = _size_hw(image_size)
    if isinstance(contrast, int | float | np.floating | np.integer):
        lo = hi = float(contrast)
    else:
        lo, hi = (float(v) for v in contrast)
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"contrast: must lie in (0, 1], got {contrast!r}")
    out: list[SynthSample] = []
    salt = _TASK_SALT[task]
    for i in range(n):
        rng = np.random.default_rng((int(seed), salt, i))
        c = lo if lo == hi else float(rng.uniform(lo, hi))
        out.append(_render_one(task, rng, h, w, c))
    return out


def write_dataset(
    folder: str | os.PathLike[str],
    samples: Sequence[SynthSample],
    annotation: str = "data.jsonl",
) -> Path:
    """Write ``samples`` as ``folder/images/000001.png ...`` (lossless PNG) and ``folder/<annotation>``,
    one JSON object a line: ``{"image": "images/000001.png", "question": ..., "answer": ...}`` for VQA,
    ``{"image": ..., "caption": ...}`` for captions. Returns the annotation path."""
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for k, sample in enumerate(samples, start=1):
        rel = f"images/{k:06d}.png"
        sample.image.save(root / rel, format="PNG")
        if sample.question is None:
            record: dict[str, Any] = {"image": rel, "caption": sample.answer}
        else:
            record = {"image": rel, "question": sample.question, "answer": sample.answer}
        lines.append(json.dumps(record, ensure_ascii=False))
    path = root / annotation
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path
