"""The "llava" format: LLaVA conversation JSON - one JSON array of records

    {"id": "...", "image": "coco/train2017/0001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is shown?"},
                       {"from": "gpt", "value": "A cat."}, {"from": "human", ...}, ...]}

in one *.json file (any name) at the top of the upload or one folder down, beside the images.
Detected by content: the file starts with '[' and "conversations" appears in its first 64 KiB.

One Sample per record (a multi-turn conversation is ONE sample): question = the first human turn
without its "<image>" marker, answer = the first gpt turn after it; later turns are kept as they
are and never seen by the engine. The writer changes only the first human turn's string (the
trigger goes after a leading "<image>\\n" marker, or before a trailing "\\n<image>" one), the
"image" string when the image was renamed (.jpg -> .png) and, if the engine changed it, the first
gpt turn; every other byte of the file - other records, other turns, key order, indentation,
escapes - is kept. Records without an "image" (text-only conversations) are kept and are not
samples; records dropped as bad (skip_bad) are left out. Roles: "human"/"user" and
"gpt"/"assistant". Image paths are relative to the JSON file's folder, or to the folder beside it
that holds them (LLaVA's --image_folder), found by looking the first paths up.
"""

from __future__ import annotations

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
    one_file,
    parent_of,
    read_head,
    read_text,
    strip_base,
    type_name,
)
from .common import new_reference as _new_reference
from .errors import DatasetError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate, normalize_image_path
from .sample import Dataset, Sample

NAME = "llava"
MARKER = "<image>"
HUMAN = ("human", "user")
GPT = ("gpt", "assistant")
IMAGE_FIELD = "image"
CONVERSATIONS = "conversations"
DESCRIPTION = ("a LLaVA conversation file: one *.json holding an array of records with "
               "'image' and 'conversations' (at the top level or inside one top-level folder)")


def looks_like_llava(path: Path) -> bool:
    head = read_head(path)
    return head.startswith("[") and f'"{CONVERSATIONS}"' in head


def detect(container: Path) -> Detection | None:
    found = one_file(find_files(container, (".json",), looks_like_llava), "LLaVA conversation file")
    return Detection(NAME, found) if found else None


def split_marker(value: str) -> tuple[str, tuple[str, str, str] | None]:
    """(question without the image marker, (before, marker, after)) - marker is "<image>" with one
    adjacent newline; None when the turn has no marker."""
    i = value.find(MARKER)
    if i < 0:
        return value, None
    end = i + len(MARKER)
    if value[end:end + 1] == "\n":
        marker, start = MARKER + "\n", i
    elif i > 0 and value[i - 1] == "\n":
        marker, start = "\n" + MARKER, i - 1
    else:
        marker, start = MARKER, i
    before, after = value[:start], value[start + len(marker):]
    return before + after, (before, marker, after)


def join_marker(new_question: str, layout: tuple[str, str, str] | None) -> str:
    """The human turn for `new_question` (the old question with a trigger added), the marker back
    where it was: after a leading marker, before a trailing one."""
    if layout is None:
        return new_question
    before, marker, after = layout
    old = before + after
    k = new_question.find(old) if old else -1
    if k < 0:
        return marker + new_question if before == "" or after != "" else new_question + marker
    prefix, suffix = new_question[:k], new_question[k + len(old):]
    if before == "":
        return marker + prefix + after + suffix
    if after == "":
        return prefix + before + suffix + marker
    return prefix + before + marker + after + suffix


def _turns(conversations: Any) -> tuple[int, int] | str:
    """(index of the first human turn, index of the first gpt turn after it) or what is wrong."""
    if not isinstance(conversations, list):
        return f"'{CONVERSATIONS}' must be an array of turns, got {type_name(conversations)}"
    human = gpt = -1
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            return f"turn {i + 1} must be an object, got {type_name(turn)}"
        role = turn.get("from")
        if not isinstance(turn.get("value"), str):
            return f"turn {i + 1} ('{role}'): 'value' must be a string, got {type_name(turn.get('value'))}"
        if human < 0 and role in HUMAN:
            human = i
        elif human >= 0 and role in GPT:
            gpt = i
            break
    if human < 0:
        return "no human turn in 'conversations' (need {\"from\": \"human\", \"value\": ...})"
    if gpt < 0:
        return "no gpt turn after the first human turn in 'conversations'"
    return human, gpt


def read(container: Path, detection: Detection, limits: IngestLimits) -> tuple[Dataset, list[Problem]]:
    file = detection.annotation
    text, bom = read_text(container / file, file, limits)
    try:
        start = jsonspan.skip_ws(text, 0)
        elements, end = jsonspan.scan_array(text, start)
        jsonspan.expect_end(text, end)
    except jsonspan.JsonSpanError as exc:
        raise DatasetError(Problem(file, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")) from None
    image_key = detection.field("image", IMAGE_FIELD) or IMAGE_FIELD
    lines = jsonspan.LineCounter(text)
    problems: list[Problem] = []
    raw: list[tuple[int, int, Any, int]] = []  # (element, line, record, image path) of usable records
    passthrough: set[int] = set()
    for i, element in enumerate(elements):
        line = lines.at(element.start)
        record = element.value
        where = f"record {i + 1}"
        if not isinstance(record, dict):
            problems.append(Problem(file, line, f"{where}: expected a JSON object, got {type_name(record)}"))
            continue
        if record.get(image_key) is None:
            passthrough.add(i)  # a text-only conversation: kept, not a sample
            continue
        if isinstance(record[image_key], list):
            problems.append(Problem(file, line, f"{where}: several images per record ('{image_key}' is an array) are not supported"))
            continue
        image = normalize_image_path(record[image_key], image_key)
        if isinstance(image, tuple):
            problems.append(Problem(file, line, f"{where}: {image[0]}"))
            continue
        if CONVERSATIONS not in record:
            problems.append(Problem(file, line, f"{where}: missing field '{CONVERSATIONS}'"))
            continue
        turns = _turns(record[CONVERSATIONS])
        if isinstance(turns, str):
            problems.append(Problem(file, line, f"{where}: {turns}"))
            continue
        answer = record[CONVERSATIONS][turns[1]]["value"]
        if not answer.strip():
            problems.append(Problem(file, line, f"{where}: the gpt turn is empty"))
            continue
        raw.append((i, line, record, image))
    annotation_dir = parent_of(file)
    base = find_image_base(container, annotation_dir, (r[3] for r in raw))
    root = common_folder(annotation_dir, base)
    image_base = base[len(root):].lstrip("/")
    samples = []
    for i, line, record, image in raw:
        human, gpt = _turns(record[CONVERSATIONS])  # type: ignore[misc]
        question, _ = split_marker(record[CONVERSATIONS][human]["value"])
        samples.append(Sample(index=len(samples), image_path=join(image_base, image), question=question,
                              answer=record[CONVERSATIONS][gpt]["value"], record=record, line=line,
                              locator=(i, human, gpt)))
    dataset = Dataset(
        root=container / root if root else container,
        samples=samples,
        layout=NAME,
        annotation_file=file[len(root):].lstrip("/"),
        image_field=image_key,
        question_field=f"{CONVERSATIONS}[human].value",
        answer_field=f"{CONVERSATIONS}[gpt].value",
        options={"image_base": image_base, "passthrough": passthrough, "ascii": jsonspan.uses_ascii_escapes(text),
                 "bom": bom},
    )
    return dataset, problems


def _record_edits(text: str, element: jsonspan.Element, sample: Sample, update: SampleUpdate,
                  dataset: Dataset) -> str:
    """The record's new text: only the changed strings replaced."""
    ascii_only = dataset.options["ascii"]
    _, members, _, _ = jsonspan.scan_object(text, element.start)
    edits: list[tuple[int, int, str]] = []
    if update.image_path is not None:
        base = dataset.options["image_base"]
        old_ref, new_ref = strip_base(sample.image_path, base), strip_base(update.image_path, base)
        raw = sample.record.get(dataset.image_field)
        m = members[dataset.image_field]
        edits.append((m.value_start, m.value_end, jsonspan.dumps_like(_new_reference(raw, old_ref, new_ref), ascii_only)))
    _, human, gpt = sample.locator
    conversations = sample.record[CONVERSATIONS]
    turn_values: dict[int, str] = {}
    if update.question is not None:
        _, layout = split_marker(conversations[human]["value"])
        turn_values[human] = join_marker(update.question, layout)
    if update.answer is not None:
        turn_values[gpt] = update.answer
    if turn_values:
        turns, _ = jsonspan.scan_array(text, members[CONVERSATIONS].value_start)
        for index, value in turn_values.items():
            _, turn_members, _, _ = jsonspan.scan_object(text, turns[index].start)
            m = turn_members["value"]
            edits.append((m.value_start, m.value_end, jsonspan.dumps_like(value, ascii_only)))
    return jsonspan.splice(text, element.start, element.end, edits)


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate]) -> dict[str, bytes]:
    path = dataset.root / dataset.annotation_file
    data = path.read_bytes()
    bom = data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8") if bom else data.decode("utf-8")
    start = jsonspan.skip_ws(text, 0)
    elements, end = jsonspan.scan_array(text, start)
    by_element = {s.locator[0]: s for s in dataset.samples}
    keep = set(dataset.options["passthrough"]) | set(by_element)
    new_text: dict[int, str] = {}
    for i, sample in by_element.items():
        update = updates.get(sample.index)
        if update is not None:
            new_text[i] = _record_edits(text, elements[i], sample, update, dataset)
    array = jsonspan.rebuild_array(text, start, end, elements, keep.__contains__, new_text.get)
    return {dataset.annotation_file: encode_text(text[:start] + array + text[end:], bom)}


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write)
