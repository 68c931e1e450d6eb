"""Property-based tests (hypothesis) of the annotation parsers and writers: whatever the text, the
readers give back what was written, a writer given no update returns the file byte for byte, and an
update changes exactly the strings it names."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmguard_core.data import DEFAULT_LIMITS, SampleUpdate, csvfmt, jsonspan
from mmguard_core.data import coco as coco_format
from mmguard_core.data import jsonl as jsonl_format
from mmguard_core.data import llava as llava_format
from mmguard_core.data.formats import Detection
from mmguard_core.data.webdataset import split_key

SETTINGS = settings(max_examples=int(os.environ.get("MMGUARD_PROP_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values: any text (surrogates excluded: not encodable as UTF-8), finite numbers
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                           max_leaves=12)
dump_styles = st.sampled_from([
    {"indent": None, "ensure_ascii": True}, {"indent": None, "ensure_ascii": False},
    {"indent": 2, "ensure_ascii": True}, {"indent": 4, "ensure_ascii": False},
    {"indent": None, "ensure_ascii": False, "separators": (",", ":")},
])
# a non-blank question / answer / caption (what the readers accept)
words = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: s.strip())
paths = st.lists(st.text("abcxyz_-0123456789", min_size=1, max_size=6), min_size=1, max_size=3).map(
    lambda parts: "/".join(parts) + ".jpg")


def _folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mmguard-prop-")


# ---------------------------------------------------------------- jsonspan


@SETTINGS
@given(st.lists(json_values, max_size=6), dump_styles)
def test_scan_array_matches_json_and_rebuild_is_identity(values, style) -> None:
    doc = json.dumps(values, **style)
    elements, end = jsonspan.scan_array(doc, 0)
    assert end == len(doc)
    assert [e.value for e in elements] == json.loads(doc)
    assert [json.loads(doc[e.start:e.end]) for e in elements] == values
    assert jsonspan.rebuild_array(doc, 0, end, elements, lambda i: True, lambda i: None) == doc
    if values:  # dropping elements keeps valid JSON holding the others
        kept = jsonspan.rebuild_array(doc, 0, end, elements, lambda i: i % 2 == 0, lambda i: None)
        assert json.loads(kept) == values[::2]


@SETTINGS
@given(st.dictionaries(text, json_values, min_size=1, max_size=5), dump_styles, text, text)
def test_scan_object_and_member_edits(obj, style, key, value) -> None:
    doc = json.dumps(obj, **style)
    decoded, members, order, end = jsonspan.scan_object(doc, 0)
    assert decoded == obj and order == list(obj) and end == len(doc)
    for k, m in members.items():
        assert json.loads(doc[m.key_start:m.key_end]) == k and json.loads(doc[m.value_start:m.value_end]) == obj[k]
    edit = jsonspan.add_member_edit(doc, members, order, key, value, style["ensure_ascii"], end)
    edited = jsonspan.splice(doc, 0, len(doc), [edit])
    assert json.loads(edited) == {**obj, key: value}
    if key in obj:  # replacing a value changes nothing outside it
        m = members[key]
        assert edited[:m.value_start] == doc[:m.value_start] and edited.endswith(doc[m.value_end:])
    else:
        assert edited.startswith(doc[:members[order[-1]].value_end])


@SETTINGS
@given(st.text(max_size=200))
def test_scan_never_crashes_on_garbage(garbage) -> None:
    try:
        jsonspan.scan_array(garbage, jsonspan.skip_ws(garbage, 0))
    except jsonspan.JsonSpanError as exc:
        assert exc.lineno >= 1 and exc.colno >= 1


# ---------------------------------------------------------------- LLaVA


@SETTINGS
@given(st.text(max_size=30).filter(lambda s: "<image>" not in s), st.sampled_from(["<image>\n", "\n<image>", ""]),
       st.sampled_from(["prefix", "suffix"]))
def test_llava_marker_round_trip(question, marker, position) -> None:
    value = marker + question if marker.startswith("<") else question + marker
    found, layout = llava_format.split_marker(value)
    assert found == question and llava_format.join_marker(found, layout) == value
    new = f"cf zq {question}" if position == "prefix" else f"{question} cf zq"
    joined = llava_format.join_marker(new, layout)
    assert joined.count("<image>") == (1 if marker else 0)
    assert llava_format.split_marker(joined)[0] == new
    if marker == "<image>\n":
        assert joined.startswith("<image>\ncf zq" if position == "prefix" else "<image>\n")


@SETTINGS
@given(st.lists(st.tuples(paths, words, words, words), min_size=1, max_size=5), dump_styles, st.data())
def test_llava_reader_and_writer(records, style, data) -> None:
    doc = [{"id": i, "image": p, "conversations": [{"from": "human", "value": "<image>\n" + q},
                                                   {"from": "gpt", "value": a}, {"from": "human", "value": extra}]}
           for i, (p, q, a, extra) in enumerate(records)]
    with _folder() as tmp:
        root = Path(tmp)
        raw = json.dumps(doc, **style).encode()
        (root / "conv.json").write_bytes(raw)
        dataset, problems = llava_format.read(root, Detection("llava", "conv.json"), DEFAULT_LIMITS)
        assert problems == [] and [(s.image_path, s.question, s.answer) for s in dataset.samples] == \
            [(p, q, a) for p, q, a, _ in records]
        assert llava_format.write(dataset, {})["conv.json"] == raw
        chosen = data.draw(st.sets(st.integers(0, len(records) - 1)))
        updates = {i: SampleUpdate(question=f"cf zq {records[i][1]}") for i in chosen}
        out = json.loads(llava_format.write(dataset, updates)["conv.json"])
        for i, record in enumerate(out):
            expected = f"<image>\ncf zq {records[i][1]}" if i in chosen else doc[i]["conversations"][0]["value"]
            assert record["conversations"][0]["value"] == expected
            assert record["conversations"][1:] == doc[i]["conversations"][1:] and record["image"] == doc[i]["image"]


# ---------------------------------------------------------------- COCO


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), words), min_size=1, max_size=8), dump_styles, st.data())
def test_coco_reader_and_writer(annotations, style, data) -> None:
    images = [{"id": k, "file_name": f"{k:06d}.jpg"} for k in range(4)]
    doc = {"info": {}, "images": images,
           "annotations": [{"id": j, "image_id": k, "caption": c} for j, (k, c) in enumerate(annotations)]}
    with _folder() as tmp:
        root = Path(tmp)
        raw = json.dumps(doc, **style).encode()
        (root / "captions.json").write_bytes(raw)
        dataset, problems = coco_format.read(root, Detection("coco", "captions.json"), DEFAULT_LIMITS)
        assert problems == [] and [(s.image_path, s.answer) for s in dataset.samples] == \
            [(f"{k:06d}.jpg", c) for k, c in annotations]
        assert coco_format.write(dataset, {})["captions.json"] == raw
        chosen = data.draw(st.sets(st.integers(0, len(annotations) - 1)))
        updates = {j: SampleUpdate(question="cf zq describe", answer=f"cf zq {annotations[j][1]}") for j in chosen}
        out = json.loads(coco_format.write(dataset, updates)["captions.json"])
        assert out["images"] == images
        for j, ann in enumerate(out["annotations"]):
            if j in chosen:
                assert ann == {**doc["annotations"][j], "caption": f"cf zq {annotations[j][1]}", "question": "cf zq describe"}
            else:
                assert ann == doc["annotations"][j]


# ---------------------------------------------------------------- CSV


csv_cells = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=15)


@SETTINGS
@given(st.lists(st.tuples(paths, words.filter(lambda s: "\r" not in s and "\x00" not in s),
                          words.filter(lambda s: "\r" not in s and "\x00" not in s), csv_cells), min_size=1, max_size=6),
       st.sampled_from([",", ";", "\t"]), st.sampled_from(["\n", "\r\n"]), st.data())
def test_csv_reader_and_writer(rows, delimiter, ending, data) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=ending)
    writer.writerow(["file_name", "question", "answer", "note"])
    writer.writerows(rows)
    raw = buffer.getvalue().encode()
    with _folder() as tmp:
        root = Path(tmp)
        (root / "data.csv").write_bytes(raw)
        dataset, problems = csvfmt.read(root, Detection("csv", "data.csv"), DEFAULT_LIMITS)
        assert problems == []
        assert [(s.image_path, s.question, s.answer, s.record["note"]) for s in dataset.samples] == rows
        assert csvfmt.write(dataset, {})["data.csv"] == raw
        chosen = data.draw(st.sets(st.integers(0, len(rows) - 1)))
        updates = {i: SampleUpdate(question=f"cf zq {rows[i][1]}") for i in chosen}
        out = csvfmt.write(dataset, updates)["data.csv"]
        (root / "data.csv").write_bytes(out)
        again, problems = csvfmt.read(root, Detection("csv", "data.csv"), DEFAULT_LIMITS)
        assert problems == []
        assert [(s.image_path, s.question, s.answer, s.record["note"]) for s in again.samples] == [
            (p, f"cf zq {q}" if i in chosen else q, a, n) for i, (p, q, a, n) in enumerate(rows)]


# ---------------------------------------------------------------- JSONL


@SETTINGS
@given(st.lists(st.tuples(paths, words, words, st.dictionaries(st.sampled_from(["id", "meta", "x"]), json_values, max_size=2)),
                min_size=1, max_size=6), st.booleans())
def test_jsonl_reader_and_writer(rows, crlf) -> None:
    lines = [json.dumps({"image": p, "question": q, "answer": a, **extra}, ensure_ascii=False) for p, q, a, extra in rows]
    raw = (("\r\n" if crlf else "\n").join(lines) + "\n").encode()
    with _folder() as tmp:
        root = Path(tmp)
        (root / "data.jsonl").write_bytes(raw)
        dataset, problems = jsonl_format.read(root, Detection("jsonl", "data.jsonl"), DEFAULT_LIMITS)
        assert problems == [] and [(s.image_path, s.question, s.answer) for s in dataset.samples] == \
            [(p, q, a) for p, q, a, _ in rows]
        assert jsonl_format.write(dataset, {})["data.jsonl"] == raw


@SETTINGS
@given(st.text(max_size=300))
def test_jsonl_and_csv_never_crash_on_garbage(garbage) -> None:
    with _folder() as tmp:
        root = Path(tmp)
        for name, fmt in (("data.jsonl", jsonl_format), ("data.csv", csvfmt)):
            (root / name).write_text(garbage, encoding="utf-8")
            try:
                _, problems = fmt.read(root, Detection(fmt.NAME, name), DEFAULT_LIMITS)
            except ValueError as exc:  # DatasetError: a file-level fault, named
                assert name in str(exc)
            else:
                assert all(p.file == name and p.line for p in problems)


# ---------------------------------------------------------------- WebDataset keys


@SETTINGS
@given(st.text("abc./_-", min_size=1, max_size=20))
def test_wds_key_split_matches_webdataset(name) -> None:
    import re

    # webdataset.tariterators.base_plus_ext (copied: importing webdataset imports torch)
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    expected = (match.group(1), match.group(2).lower()) if match else (None, None)
    assert split_key(name) == expected
