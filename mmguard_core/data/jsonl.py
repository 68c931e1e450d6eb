"""The "jsonl" format: images plus ONE annotation file, `data.jsonl`, `metadata.jsonl` or
`train.jsonl`, at the top of the upload or inside one top-level folder.

One JSON object per line: `image` or `file_name` (path relative to the annotation file),
and either `caption` (caption data) or `question` + `answer` (VQA). Other fields are kept.
Field names can be changed with load_dataset(fields={"image": ..., "question": ..., "answer": ...,
"caption": ...}). Blank lines are allowed and kept. The writer rewrites only the lines of samples that
changed (image path, question, caption/answer); every other line keeps its exact bytes,
lines of samples dropped as bad (skip_bad) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .archive import JUNK_DIRS, IngestLimits
from .errors import DatasetError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate, _type_name, normalize_image_path
from .jsonspan import NUMBER_TOO_LONG
from .sample import Dataset, Sample

NAME = "jsonl"
ANNOTATION_NAMES = ("data.jsonl", "metadata.jsonl", "train.jsonl")
IMAGE_FIELDS = ("image", "file_name")
QUESTION_FIELD = "question"
ANSWER_FIELD = "answer"
CAPTION_FIELD = "caption"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Names:
    """The field names one read uses (the defaults, or the caller's `fields=`)."""

    image: tuple[str, ...] = IMAGE_FIELDS
    question: str = QUESTION_FIELD
    answer: str = ANSWER_FIELD
    caption: str = CAPTION_FIELD

    @classmethod
    def of(cls, detection: Detection) -> Names:
        image = detection.field("image")
        return cls(
            image=(image,) if image else IMAGE_FIELDS,
            question=detection.field("question", QUESTION_FIELD) or QUESTION_FIELD,
            answer=detection.field("answer", ANSWER_FIELD) or ANSWER_FIELD,
            caption=detection.field("caption", CAPTION_FIELD) or CAPTION_FIELD,
        )


DEFAULT_NAMES = Names()


def _candidates(folder: Path) -> list[str]:
    try:
        return sorted(name for name in ANNOTATION_NAMES if (folder / name).is_file())
    except OSError:
        return []


def detect(container: Path) -> Detection | None:
    """The annotation file at the top, else in exactly one top-level folder. More than one
    candidate (at the top, or across top-level folders) is a DatasetError."""
    top = _candidates(container)
    if len(top) > 1:
        raise DatasetError(
            Problem("", None, f"more than one annotation file at the top: {', '.join(top)}; keep exactly one")
        )
    if top:
        return Detection(NAME, top[0])
    found = []
    for sub in sorted(p for p in container.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in JUNK_DIRS):
        found.extend(f"{sub.name}/{name}" for name in _candidates(sub))
    if len(found) > 1:
        raise DatasetError(Problem("", None, f"more than one annotation file: {', '.join(found)}; keep exactly one"))
    return Detection(NAME, found[0]) if found else None


DESCRIPTION = (
    "one of " + ", ".join(ANNOTATION_NAMES) + " (JSON lines) at the top level or inside one top-level folder"
)


def _decode_error(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8"


def _parse_lines(data: bytes, file: str) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem], int]:
    """(line number, object) for each good line, problems for the bad ones, count of non-blank lines."""
    objects: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    non_blank = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        non_blank += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(file, number, _decode_error(raw, exc)))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, number, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            problems.append(Problem(file, number, "not valid JSON: nested too deeply"))
            continue
        except ValueError:
            problems.append(Problem(file, number, f"not valid JSON: {NUMBER_TOO_LONG}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(file, number, f"expected a JSON object, got {_type_name(obj)}"))
            continue
        objects.append((number, obj))
    return objects, problems, non_blank


def _layout(objects: list[tuple[int, dict[str, Any]]], names: Names = DEFAULT_NAMES) -> tuple[str, str, int]:
    """(image field, kind, line it was decided on) from the first object that says."""
    image_field = next((f for _, obj in objects for f in names.image if f in obj), names.image[0])
    for number, obj in objects:
        # 'answer' decides first: caption data may carry an instruction in a 'question' field
        if names.answer in obj:
            return image_field, "vqa", number
        if names.caption in obj:
            return image_field, "caption", number
        if names.question in obj:
            return image_field, "vqa", number
    return image_field, "vqa", 0


def _text(obj: dict[str, Any], name: str, *, allow_number: bool = False, allow_empty: bool = False) -> str | tuple[str]:
    value = obj[name]
    if allow_number and isinstance(value, int | float) and not isinstance(value, bool):
        value = json.dumps(value)
    if not isinstance(value, str):
        return (f"field {name!r} must be a string, got {_type_name(value)}",)
    if not allow_empty and not value.strip():
        return (f"field {name!r} is empty",)
    return value


def _sample(obj: dict[str, Any], number: int, image_field: str, kind: str, decided_on: int,
            names: Names = DEFAULT_NAMES) -> Sample | str:
    """A Sample, or the message saying what is wrong with this line."""
    q_field, a_field, c_field = names.question, names.answer, names.caption
    if image_field not in obj:
        other = [f for f in names.image if f != image_field and f in obj]
        if other:
            return f"has {other[0]!r} but the file uses {image_field!r} for the image path (line {decided_on or 1}); use one name"
        return f"missing the image field ({' or '.join(repr(f) for f in names.image)})"
    image = normalize_image_path(obj[image_field], image_field)
    if isinstance(image, tuple):
        return image[0]
    if kind == "vqa":
        missing = [f for f in (q_field, a_field) if f not in obj]
        if missing:
            if c_field in obj and len(missing) == 2:
                return f"has {c_field!r} but the file is VQA data (line {decided_on}); every line needs {q_field!r} and {a_field!r}"
            if len(missing) == 2:
                return f"missing text fields: need {q_field!r} and {a_field!r} (or {c_field!r} for caption data)"
            return f"missing field {missing[0]!r} (a VQA line needs {q_field!r} and {a_field!r})"
        question = _text(obj, q_field, allow_empty=True)
        answer = _text(obj, a_field, allow_number=True)
        for value in (question, answer):
            if isinstance(value, tuple):
                return value[0]
        return Sample(index=0, image_path=image, answer=str(answer), question=str(question), record=obj, line=number)
    if c_field not in obj:
        if a_field in obj:
            return f"has {q_field!r}/{a_field!r} but the file is caption data (line {decided_on}); every line needs {c_field!r}"
        return f"missing field {c_field!r}"
    caption = _text(obj, c_field)
    if isinstance(caption, tuple):
        return caption[0]
    return Sample(index=0, image_path=image, answer=caption, question=None, record=obj, line=number)


def read(container: Path, detection: Detection, limits: IngestLimits) -> tuple[Dataset, list[Problem]]:
    file = detection.annotation
    path = container / file
    size = path.stat().st_size
    if size > limits.max_annotation_bytes:
        raise DatasetError(
            Problem(file, None, f"annotation file is {size} bytes, over the limit of {limits.max_annotation_bytes} (max_annotation_bytes)")
        )
    data = path.read_bytes()
    objects, problems, non_blank = _parse_lines(data, file)
    if non_blank == 0:
        raise DatasetError(Problem(file, None, "no samples: the annotation file is empty"))
    names = Names.of(detection)
    image_field, kind, decided_on = _layout(objects, names)
    samples: list[Sample] = []
    for number, obj in objects:
        result = _sample(obj, number, image_field, kind, decided_on, names)
        if isinstance(result, str):
            problems.append(Problem(file, number, result))
        else:
            result.index = len(samples)
            samples.append(result)
    dataset = Dataset(
        root=container / detection.root if detection.root else container,
        samples=samples,
        layout=NAME,
        annotation_file=PurePosixPath(file).name,
        image_field=image_field,
        question_field=names.question,
        answer_field=names.answer if kind == "vqa" else names.caption,
    )
    return dataset, sorted(problems, key=lambda p: p.line or 0)


def _new_image_value(raw: Any, old_path: str, new_path: str) -> str:
    """Keep the annotation's own spelling ('./', backslashes) when only the file name changes."""
    old, new = PurePosixPath(old_path), PurePosixPath(new_path)
    if isinstance(raw, str) and old.parent == new.parent and raw.endswith(old.name):
        return raw[: len(raw) - len(old.name)] + new.name
    return new_path


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate]) -> dict[str, bytes]:
    data = (dataset.root / dataset.annotation_file).read_bytes()
    by_line = {sample.line: sample for sample in dataset.samples}
    lines = data.split(b"\n")
    out: list[bytes] = []
    for number, raw in enumerate(lines, 1):
        if number == len(lines) and raw == b"":
            out.append(raw)  # the final newline
            continue
        bom = BOM if number == 1 and raw.startswith(BOM) else b""
        body = raw[len(bom):]
        if not body.strip():
            out.append(raw)
            continue
        sample = by_line.get(number)
        if sample is None:
            continue  # a bad line dropped by skip_bad
        update = updates.get(sample.index)
        if update is None:
            out.append(raw)
            continue
        record = dict(sample.record)
        if update.image_path is not None:
            record[dataset.image_field] = _new_image_value(record.get(dataset.image_field), sample.image_path, update.image_path)
        if update.question is not None:
            record[dataset.question_field] = update.question
        if update.answer is not None:
            record[dataset.answer_field] = update.answer
        text = json.dumps(record, ensure_ascii=False).encode("utf-8")
        out.append(bom + text + (b"\r" if body.endswith(b"\r") else b""))
    return {dataset.annotation_file: b"\n".join(out)}


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write)
