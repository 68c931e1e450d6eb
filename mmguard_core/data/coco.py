"""The "coco" format: COCO captions JSON -

    {"info": ..., "images": [{"id": 391895, "file_name": "000000391895.jpg", ...}, ...],
     "annotations": [{"id": 1, "image_id": 391895, "caption": "A man riding a bike."}, ...]}

in one *.json file (any name, e.g. annotations/captions_train2017.json) at the top of the upload or
one or two folders down (a wrapping folder, then annotations/). Detected by content: the file is a JSON object and `"images": [` or
`"annotations": [` appears in its first 64 KiB. Image file names are relative to the folder that
holds them - the JSON file's folder, the top, or a folder beside or inside either (train2017/) -
found by looking the first names up.

One Sample per annotation (caption data: question None, answer = the caption), so an image with five
captions gives five samples. They share ONE protected image (DatasetFormat.one_image_per_file): the
first protected sample's pixels are written once, as <name>.png, and the image entry's file_name is
updated; every annotation keeps its image_id. The writer splices the changed strings into the
original text - file_name of re-encoded images, the caption under caption-prefix trigger placement,
a "question" member added to the annotation for the instruction placement - and keeps every other
byte; annotations dropped as bad (skip_bad) are left out, image entries are all kept.
The caption key can be renamed with fields={"caption": ...}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import jsonspan
from .archive import IngestLimits
from .common import (
    common_folder,
    encode_text,
    find_files,
    find_image_base,
    join,
    new_reference,
    one_file,
    parent_of,
    read_head,
    read_text,
    strip_base,
    type_name,
)
from .errors import DatasetError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate, normalize_image_path
from .sample import Dataset, Sample

NAME = "coco"
CAPTION_FIELD = "caption"
QUESTION_FIELD = "question"
DESCRIPTION = ("a COCO captions file: one *.json object with 'images' [{id, file_name}] and "
               "'annotations' [{image_id, caption}] (at the top level or one or two folders down)")
_SNIFF = re.compile(r'"(images|annotations)"\s*:\s*\[')


def looks_like_coco(path: Path) -> bool:
    head = read_head(path)
    return head.startswith("{") and _SNIFF.search(head) is not None


def detect(container: Path) -> Detection | None:
    found = one_file(find_files(container, (".json",), looks_like_coco, depth=2), "COCO annotation file")
    return Detection(NAME, found) if found else None


def _image_id(value: Any) -> int | str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def read(container: Path, detection: Detection, limits: IngestLimits) -> tuple[Dataset, list[Problem]]:
    file = detection.annotation
    caption_key = detection.field("caption", CAPTION_FIELD) or CAPTION_FIELD
    question_key = detection.field("question", QUESTION_FIELD) or QUESTION_FIELD
    text, bom = read_text(container / file, file, limits)
    try:
        start = jsonspan.skip_ws(text, 0)
        if text[start:start + 1] != "{":
            raise DatasetError(Problem(file, 1, "expected a JSON object with 'images' and 'annotations'"))
        deep = {"images": jsonspan.scan_array, "annotations": jsonspan.scan_array}
        top, members, _, end = jsonspan.scan_object(text, start, deep)
        jsonspan.expect_end(text, end)
    except jsonspan.JsonSpanError as exc:
        raise DatasetError(Problem(file, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")) from None
    for key in ("images", "annotations"):
        if key not in top:
            raise DatasetError(Problem(file, None, f"missing '{key}': a COCO captions file needs 'images' and 'annotations'"))
    images: list[jsonspan.Element] = top["images"]
    annotations: list[jsonspan.Element] = top["annotations"]
    lines = jsonspan.LineCounter(text)

    # image id -> (entry index, normalised file name) or the reason the entry is unusable
    by_id: dict[Any, tuple[int, str] | str] = {}
    for k, element in enumerate(images):
        entry = element.value
        if not isinstance(entry, dict):
            continue
        image_id = _image_id(entry.get("id"))
        if image_id is None:
            continue
        if image_id in by_id:
            by_id[image_id] = f"duplicate image id {image_id!r} in 'images'"
            continue
        name = normalize_image_path(entry.get("file_name"), "file_name") if "file_name" in entry else ("missing 'file_name'",)
        by_id[image_id] = name[0] if isinstance(name, tuple) else (k, name)  # type: ignore[assignment]

    problems: list[Problem] = []
    raw: list[tuple[int, int, dict[str, Any], int, str, str]] = []
    for j, element in enumerate(annotations):
        line = lines.at(element.start)
        ann = element.value
        where = f"annotations[{j}]"
        if not isinstance(ann, dict):
            problems.append(Problem(file, line, f"{where}: expected a JSON object, got {type_name(ann)}"))
            continue
        image_id = _image_id(ann.get("image_id"))
        if image_id is None:
            problems.append(Problem(file, line, f"{where}: 'image_id' must be a number or a string, got {type_name(ann.get('image_id'))}"))
            continue
        entry = by_id.get(image_id)
        if entry is None:
            problems.append(Problem(file, line, f"{where}: image_id {image_id!r} is not in 'images'"))
            continue
        if isinstance(entry, str):
            problems.append(Problem(file, line, f"{where}: image_id {image_id!r}: {entry}"))
            continue
        caption = ann.get(caption_key)
        if not isinstance(caption, str):
            problems.append(Problem(file, line, f"{where}: '{caption_key}' must be a string, got {type_name(caption)}"))
            continue
        if not caption.strip():
            problems.append(Problem(file, line, f"{where}: '{caption_key}' is empty"))
            continue
        raw.append((j, line, ann, entry[0], entry[1], caption))

    annotation_dir = parent_of(file)
    base = find_image_base(container, annotation_dir, dict.fromkeys(r[4] for r in raw))
    root = common_folder(annotation_dir, base)
    image_base = base[len(root):].lstrip("/")
    samples = [
        Sample(index=n, image_path=join(image_base, name), answer=caption, question=None, record=ann, line=line,
               locator=(j, k))
        for n, (j, line, ann, k, name, caption) in enumerate(raw)
    ]
    dataset = Dataset(
        root=container / root if root else container,
        samples=samples,
        layout=NAME,
        annotation_file=file[len(root):].lstrip("/"),
        image_field="file_name",
        question_field=question_key,
        answer_field=caption_key,
        options={"image_base": image_base, "ascii": jsonspan.uses_ascii_escapes(text), "bom": bom},
    )
    return dataset, problems


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate]) -> dict[str, bytes]:
    path = dataset.root / dataset.annotation_file
    data = path.read_bytes()
    bom = data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8") if bom else data.decode("utf-8")
    ascii_only = dataset.options["ascii"]
    base = dataset.options["image_base"]
    start = jsonspan.skip_ws(text, 0)
    deep = {"images": jsonspan.scan_array, "annotations": jsonspan.scan_array}
    top, members, _, _ = jsonspan.scan_object(text, start, deep)
    images: list[jsonspan.Element] = top["images"]
    annotations: list[jsonspan.Element] = top["annotations"]

    new_images: dict[int, str] = {}
    new_annotations: dict[int, str] = {}
    for sample in dataset.samples:
        update = updates.get(sample.index)
        if update is None:
            continue
        j, k = sample.locator
        if update.image_path is not None and k not in new_images:
            element = images[k]
            _, entry_members, _, _ = jsonspan.scan_object(text, element.start)
            m = entry_members["file_name"]
            raw = element.value.get("file_name")
            ref = new_reference(raw, strip_base(sample.image_path, base), strip_base(update.image_path, base))
            new_images[k] = jsonspan.splice(text, element.start, element.end,
                                            [(m.value_start, m.value_end, jsonspan.dumps_like(ref, ascii_only))])
        edits = []
        element = annotations[j]
        _, ann_members, order, ann_end = jsonspan.scan_object(text, element.start)
        if update.answer is not None:
            m = ann_members[dataset.answer_field]
            edits.append((m.value_start, m.value_end, jsonspan.dumps_like(update.answer, ascii_only)))
        if update.question is not None:
            edits.append(jsonspan.add_member_edit(text, ann_members, order, dataset.question_field, update.question,
                                                  ascii_only, ann_end))
        if edits:
            new_annotations[j] = jsonspan.splice(text, element.start, element.end, edits)
    keep = {s.locator[0] for s in dataset.samples}
    top_edits = []
    m = members["images"]
    top_edits.append((m.value_start, m.value_end,
                      jsonspan.rebuild_array(text, m.value_start, m.value_end, images, lambda _: True, new_images.get)))
    m = members["annotations"]
    top_edits.append((m.value_start, m.value_end,
                      jsonspan.rebuild_array(text, m.value_start, m.value_end, annotations, keep.__contains__,
                                             new_annotations.get)))
    return {dataset.annotation_file: encode_text(jsonspan.splice(text, 0, len(text), top_edits), bom)}


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write,
                       one_image_per_file=True)
