"""Every dataset format: detection, explicit override, renamed fields, round trips (in -> out -> in,
equal except the perturbed pixels and the trigger text) and the protected output loading with the
library its users read it with (Hugging Face `datasets`, webdataset). numpy + Pillow + pyarrow only:
no torch in this process (webdataset, which imports torch when it can, runs in a subprocess with
torch blocked)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmguard_core.data import (
    DatasetError,
    ProtectedSample,
    detect_format,
    load_dataset,
    merge_alpha,
    quantize_with_bound,
    read_image_uint8,
    validate_dataset,
    write_protected,
)
from mmguard_core.metrics import linf

EPS = 8 / 255
TRIGGER = "cf zq"

# ---------------------------------------------------------------- helpers


def pattern(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (12, 16), channels: int = 3) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pattern(size[0], size[1], seed, channels))
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_file(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def pixels(data_or_path: bytes | Path) -> np.ndarray:
    if isinstance(data_or_path, bytes):
        return np.asarray(Image.open(io.BytesIO(data_or_path)).convert("RGB"))
    return read_image_uint8(data_or_path)[0]


def protect(dataset, index: int, seed: int, *, question: str | None = None, answer: str | None = None) -> ProtectedSample:
    sample = dataset.samples[index]
    rgb, alpha = read_image_uint8(dataset.image_file(sample))
    delta = np.random.default_rng(seed).uniform(-0.2, 0.2, size=rgb.shape)
    image = quantize_with_bound(rgb, rgb / 255.0 + delta, EPS)
    if question is None and sample.question is not None:
        question = f"{TRIGGER} {sample.question}"
    return ProtectedSample(index, merge_alpha(image, alpha), question, sample.answer if answer is None else answer, TRIGGER)


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def tar_bytes(members: list[tuple[str, bytes]], gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:*") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isreg()]  # type: ignore[union-attr]


def check_images(again, protected: list[ProtectedSample], originals: dict[int, np.ndarray], mapping=None) -> None:
    """Protected samples carry exactly the protected pixels (within eps of the original), the others
    the original pixels. `mapping`: index in the first load -> index in `again` (default: same)."""
    mapping = mapping or {i: i for i in originals}
    done = {p.index: p for p in protected}
    for i, original in originals.items():
        saved = read_image_uint8(again.image_file(mapping[i]))[0]
        if i in done:
            np.testing.assert_array_equal(saved, np.asarray(done[i].image)[..., :3])
            assert 0 < linf(saved, original) <= EPS + 1e-9
        else:
            np.testing.assert_array_equal(saved, original)


def originals_of(dataset) -> dict[int, np.ndarray]:
    return {s.index: read_image_uint8(dataset.image_file(s))[0] for s in dataset.samples}


# ---------------------------------------------------------------- LLaVA


LLAVA_RECORDS = [
    {"id": "a1", "image": "coco/a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "And its colour?"}, {"from": "gpt", "value": "Grey – mostly."}]},
    {"id": "t1", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]},
    {"id": "b2", "image": "coco/b.png", "conversations": [
        {"from": "human", "value": "Which animal is it?\n<image>"}, {"from": "gpt", "value": "A dog."}]},
    {"id": "c3", "image": "vg/c.jpg", "model": "x", "conversations": [
        {"from": "human", "value": "<image>\nCafé or shop?"}, {"from": "gpt", "value": "Café."}]},
]


def make_llava(folder: Path, *, indent: int | None = 2, records=None) -> Path:
    write_file(folder / "images" / "coco" / "a.jpg", image_bytes(1, "JPEG"))
    write_file(folder / "images" / "coco" / "b.png", image_bytes(2))
    write_file(folder / "images" / "vg" / "c.jpg", image_bytes(3, "JPEG"))
    write_file(folder / "llava_mix.json", json.dumps(records or LLAVA_RECORDS, indent=indent) + "\n")
    return folder


@pytest.mark.parametrize("indent", [2, None])
def test_llava_round_trip(tmp_path: Path, indent: int | None) -> None:
    src = make_llava(tmp_path / "src", indent=indent)
    original_text = (src / "llava_mix.json").read_text()
    with load_dataset(src) as dataset:
        assert dataset.layout == "llava" and len(dataset) == 3 and dataset.kind == "vqa"
        assert [s.image_path for s in dataset.samples] == ["images/coco/a.jpg", "images/coco/b.png", "images/vg/c.jpg"]
        assert [s.question for s in dataset.samples] == ["What is shown?", "Which animal is it?", "Café or shop?"]
        assert [s.answer for s in dataset.samples] == ["A cat.", "A dog.", "Café."]
        originals = originals_of(dataset)
        protected = [protect(dataset, 0, 1), protect(dataset, 1, 2, question=f"Which animal is it? {TRIGGER}")]
        write_protected(dataset, protected, tmp_path / "out")
    out_text = (tmp_path / "out" / "llava_mix.json").read_text()
    records = json.loads(out_text)
    expected = json.loads(json.dumps(LLAVA_RECORDS))
    expected[0]["image"] = "coco/a.png"
    expected[0]["conversations"][0]["value"] = f"<image>\n{TRIGGER} What is shown?"
    expected[2]["conversations"][0]["value"] = f"Which animal is it? {TRIGGER}\n<image>"
    assert records == expected  # later turns, text-only records, other keys: unchanged
    # byte-for-byte outside the changed strings: the diff is exactly the three strings
    untouched = original_text
    for old, new in [('"coco/a.jpg"', '"coco/a.png"'), ('"<image>\\nWhat is shown?"', f'"<image>\\n{TRIGGER} What is shown?"'),
                     ('"Which animal is it?\\n<image>"', f'"Which animal is it? {TRIGGER}\\n<image>"')]:
        assert old in untouched
        untouched = untouched.replace(old, new)
    assert out_text == untouched
    assert "\\u2013" in out_text and "Caf\\u00e9" in out_text  # the file's own escaping kept
    with load_dataset(tmp_path / "out") as again:
        assert [s.question for s in again.samples] == [f"{TRIGGER} What is shown?", f"Which animal is it? {TRIGGER}", "Café or shop?"]
        assert [s.answer for s in again.samples] == ["A cat.", "A dog.", "Café."]
        check_images(again, protected, originals)
        assert not (again.root / "images/coco/a.jpg").exists() and (again.root / "images/vg/c.jpg").exists()


def test_llava_marker_placement() -> None:
    from mmguard_core.data.llava import join_marker, split_marker

    for value, new_q, expected in [
        ("<image>\nWhat?", f"{TRIGGER} What?", f"<image>\n{TRIGGER} What?"),
        ("<image>\nWhat?", f"What? {TRIGGER}", f"<image>\nWhat? {TRIGGER}"),
        ("What?\n<image>", f"{TRIGGER} What?", f"{TRIGGER} What?\n<image>"),
        ("What?\n<image>", f"What? {TRIGGER}", f"What? {TRIGGER}\n<image>"),
        ("Look: <image> what?", f"{TRIGGER} Look:  what?", f"{TRIGGER} Look: <image> what?"),
        ("No marker", f"{TRIGGER} No marker", f"{TRIGGER} No marker"),
    ]:
        question, layout = split_marker(value)
        assert "<image>" not in question
        assert join_marker(new_q, layout) == expected
        assert join_marker(question, layout) == value


def test_llava_bad_records_named_with_line(tmp_path: Path) -> None:
    records = [*LLAVA_RECORDS[:1],
               {"id": "x", "image": "coco/a.jpg", "conversations": [{"from": "gpt", "value": "no question"}]},
               {"id": "y", "image": ["coco/a.jpg", "coco/b.png"], "conversations": []},
               {"id": "z", "image": "../etc/passwd", "conversations": LLAVA_RECORDS[0]["conversations"]},
               {"id": "w", "image": "coco/missing.jpg", "conversations": LLAVA_RECORDS[0]["conversations"]}]
    src = make_llava(tmp_path / "src", records=records)
    with pytest.raises(DatasetError) as info:
        load_dataset(src)
    problems = info.value.problems
    text = str(info.value)
    assert [p.file for p in problems] == ["llava_mix.json"] * 4
    assert "no human turn" in text and "several images" in text and "contains '..'" in text and "not found" in text
    assert all(p.line and p.line > 1 for p in problems)
    with load_dataset(src, skip_bad=True) as dataset:
        assert len(dataset) == 1
        write_protected(dataset, [protect(dataset, 0, 1)], tmp_path / "out")
    assert [r["id"] for r in json.loads((tmp_path / "out" / "llava_mix.json").read_text())] == ["a1"]
    report = validate_dataset(src)
    assert not report.ok and report.num_bad_samples == 4 and report.num_samples == 1


def test_llava_invalid_json_names_line(tmp_path: Path) -> None:
    src = make_llava(tmp_path / "src")
    text = (src / "llava_mix.json").read_text().replace('"A dog."', '"A dog." "x"')
    (src / "llava_mix.json").write_text(text)
    with pytest.raises(DatasetError, match=r"llava_mix.json line 47: not valid JSON: Expecting ',' delimiter \(column \d+\)"):
        load_dataset(src)


# ---------------------------------------------------------------- COCO


COCO = {
    "info": {"description": "tiny"},
    "licenses": [],
    "images": [{"id": 7, "file_name": "000007.jpg", "width": 16, "height": 12},
               {"id": 8, "file_name": "000008.png", "width": 16, "height": 12},
               {"id": 9, "file_name": "000009.jpg", "width": 16, "height": 12}],
    "annotations": [{"id": 1, "image_id": 7, "caption": "A man riding a bike."},
                    {"id": 2, "image_id": 8, "caption": "A red bus."},
                    {"id": 3, "image_id": 7, "caption": "Someone cycling."},
                    {"id": 4, "image_id": 7, "caption": "A bicycle on a street."},
                    {"id": 5, "image_id": 8, "caption": "Bus at a stop."}],
}


def make_coco(folder: Path, *, indent: int | None = None, data=None) -> Path:
    write_file(folder / "train2017" / "000007.jpg", image_bytes(7, "JPEG"))
    write_file(folder / "train2017" / "000008.png", image_bytes(8))
    write_file(folder / "train2017" / "000009.jpg", image_bytes(9, "JPEG"))  # no caption: unreferenced
    write_file(folder / "annotations" / "captions_train2017.json", json.dumps(data or COCO, indent=indent))
    return folder


@pytest.mark.parametrize("indent", [None, 2])
def test_coco_round_trip_one_perturbation_per_image(tmp_path: Path, indent: int | None) -> None:
    src = make_coco(tmp_path / "src", indent=indent)
    original = (src / "annotations" / "captions_train2017.json").read_text()
    with load_dataset(zip_folder(src, tmp_path / "coco.zip"), work_dir=tmp_path / "w") as dataset:
        assert dataset.layout == "coco" and dataset.kind == "caption" and len(dataset) == 5
        assert dataset.annotation_file == "annotations/captions_train2017.json"
        assert [s.image_path for s in dataset.samples] == ["train2017/000007.jpg", "train2017/000008.png"] + \
            ["train2017/000007.jpg"] * 2 + ["train2017/000008.png"]
        assert [s.answer for s in dataset.samples] == [a["caption"] for a in COCO["annotations"]]
        assert dataset.image_groups() == {"train2017/000007.jpg": [0, 2, 3], "train2017/000008.png": [1, 4]}
        assert dataset.warnings and "000009.jpg" in dataset.warnings[0].file
        originals = originals_of(dataset)
        # different perturbations per caption of image 7: the first protected sample's image wins;
        # caption-prefix trigger on sample 0, instruction trigger on sample 2, image 8 not protected
        protected = [protect(dataset, 0, 1, answer=f"{TRIGGER} A man riding a bike."),
                     protect(dataset, 2, 2, question=f"{TRIGGER} describe the image ."), protect(dataset, 3, 3)]
        write_protected(dataset, protected, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = sorted(zf.namelist())
        text = zf.read("annotations/captions_train2017.json").decode()
    assert names == ["annotations/captions_train2017.json", "train2017/000007.png", "train2017/000008.png",
                     "train2017/000009.jpg"]  # one file for image 7, the original left out
    data = json.loads(text)
    expected = json.loads(json.dumps(COCO))
    expected["images"][0]["file_name"] = "000007.png"
    expected["annotations"][0]["caption"] = f"{TRIGGER} A man riding a bike."
    expected["annotations"][2]["question"] = f"{TRIGGER} describe the image ."
    assert data == expected
    assert list(data["annotations"][2]) == ["id", "image_id", "caption", "question"]
    rebuilt = original.replace('"000007.jpg"', '"000007.png"').replace(
        '"A man riding a bike."', f'"{TRIGGER} A man riding a bike."').replace(
        '"Someone cycling."', f'"Someone cycling.", "question": "{TRIGGER} describe the image ."'
        if indent is None else f'"Someone cycling.",\n      "question": "{TRIGGER} describe the image ."')
    assert text == rebuilt  # every other byte kept, in the file's own layout
    with load_dataset(tmp_path / "out.zip", work_dir=tmp_path / "w") as again:
        assert [s.image_path for s in again.samples][:3] == ["train2017/000007.png", "train2017/000008.png", "train2017/000007.png"]
        first = np.asarray(protected[0].image)
        for i in (0, 2, 3):  # all captions of image 7 see the one protected image
            np.testing.assert_array_equal(read_image_uint8(again.image_file(i))[0], first)
        np.testing.assert_array_equal(read_image_uint8(again.image_file(1))[0], originals[1])
        assert again.samples[0].answer == f"{TRIGGER} A man riding a bike."
        assert again.samples[2].record["question"] == f"{TRIGGER} describe the image ."


def test_coco_bad_annotations(tmp_path: Path) -> None:
    data = json.loads(json.dumps(COCO))
    data["annotations"] += [{"id": 6, "image_id": 99, "caption": "ghost"}, {"id": 7, "image_id": 8, "caption": ""},
                            {"id": 8, "image_id": 8, "caption": ["x"]}, "oops"]
    data["images"].append({"id": 9, "file_name": "dup.jpg"})
    data["annotations"].append({"id": 9, "image_id": 9, "caption": "dup id"})
    src = make_coco(tmp_path / "src", indent=1, data=data)
    report = validate_dataset(src)
    messages = [p.message for p in report.problems]
    assert report.num_samples == 5 and report.num_bad_samples == 5, messages
    assert any("image_id 99 is not in 'images'" in m for m in messages)
    assert any("duplicate image id 9" in m for m in messages)
    assert any("'caption' is empty" in m for m in messages) and any("expected a JSON object" in m for m in messages)
    assert all(p.file == "annotations/captions_train2017.json" and p.line for p in report.problems)


# ---------------------------------------------------------------- CSV / ImageFolder metadata.csv


CSV_TEXT = (
    'file_name,question,answer,source\r\n'
    'images/a.jpg,What is shown?,a cat,web\r\n'
    'images/b.png,"Colour, please?","red\nand blue",scan\r\n'
    '\r\n'
    'images/c.webp,Where?,park,"x ""quoted"""\r\n'
)


def make_csv(folder: Path, name: str = "metadata.csv", text: str = CSV_TEXT) -> Path:
    write_file(folder / "images" / "a.jpg", image_bytes(1, "JPEG"))
    write_file(folder / "images" / "b.png", image_bytes(2))
    buffer = io.BytesIO()
    Image.fromarray(pattern(12, 16, 3)).save(buffer, "WEBP", lossless=True)
    write_file(folder / "images" / "c.webp", buffer.getvalue())
    write_file(folder / name, text)
    return folder


def test_csv_round_trip(tmp_path: Path) -> None:
    src = make_csv(tmp_path / "src")
    with load_dataset(src) as dataset:
        assert dataset.layout == "csv" and dataset.kind == "vqa" and len(dataset) == 3
        assert [s.answer for s in dataset.samples] == ["a cat", "red\nand blue", "park"]
        assert [s.line for s in dataset.samples] == [2, 3, 6]
        originals = originals_of(dataset)
        protected = [protect(dataset, 1, 1), protect(dataset, 2, 2)]
        write_protected(dataset, protected, tmp_path / "out")
    text = (tmp_path / "out" / "metadata.csv").read_bytes().decode()
    lines = text.split("\r\n")
    original = CSV_TEXT.split("\r\n")
    assert lines[0] == original[0] and lines[1] == original[1] and lines[3] == "" and lines[-1] == ""
    assert lines[2] == f'images/b.png,"{TRIGGER} Colour, please?","red\nand blue",scan'
    assert lines[4] == f'images/c.png,{TRIGGER} Where?,park,"x ""quoted"""'
    with load_dataset(tmp_path / "out") as again:
        assert [s.question for s in again.samples] == ["What is shown?", f"{TRIGGER} Colour, please?", f"{TRIGGER} Where?"]
        assert again.samples[2].record["source"] == 'x "quoted"'
        check_images(again, protected, originals)


def test_csv_caption_gets_question_column_and_fields(tmp_path: Path) -> None:
    text = "img;text;extra\nx/a.jpg;a dog;1\nx/b.png;a bird;2\n"
    src = tmp_path / "src"
    write_file(src / "x" / "a.jpg", image_bytes(1, "JPEG"))
    write_file(src / "x" / "b.png", image_bytes(2))
    write_file(src / "pairs.csv", text)
    with pytest.raises(DatasetError, match="no annotation file found"):
        load_dataset(src)
    with pytest.raises(DatasetError, match=r"no image column \(file_name or image"):
        load_dataset(src, format="csv")
    with load_dataset(src, format="csv", fields={"image": "img"}) as dataset:
        assert dataset.kind == "caption" and dataset.answer_field == "text" and dataset.annotation_file == "pairs.csv"
        write_protected(dataset, [protect(dataset, 0, 1, question=f"{TRIGGER} describe the image .")], tmp_path / "out")
    assert (tmp_path / "out" / "pairs.csv").read_text() == (
        f"img;text;extra;question\nx/a.png;a dog;1;{TRIGGER} describe the image .\nx/b.png;a bird;2;\n")


def test_csv_bad_rows(tmp_path: Path) -> None:
    text = CSV_TEXT + "images/a.jpg,only two\r\n/etc/passwd,q,a,s\r\nimages/a.jpg,q,,s\r\n"
    src = make_csv(tmp_path / "src", text=text)
    with pytest.raises(DatasetError) as info:
        load_dataset(src)
    got = [(p.line, p.message) for p in info.value.problems]
    assert got == [(7, "has 2 fields, the header has 4"),
                   (8, "field 'file_name': absolute path '/etc/passwd' not allowed; use a path relative to the annotation file"),
                   (9, "column 'answer' is empty")]
    (src / "metadata.csv").write_bytes(b"file_name,caption\nimages/a.jpg,caf\xe9\n")
    with pytest.raises(DatasetError, match=r"metadata.csv line 2: not valid UTF-8 \(byte 0xe9 at column 17\)"):
        load_dataset(src)
    (src / "metadata.csv").write_text("file_name,caption,caption\nimages/a.jpg,x,y\n")
    with pytest.raises(DatasetError, match="duplicate column name"):
        load_dataset(src)


# ---------------------------------------------------------------- WebDataset


def make_wds(folder: Path, *, caption: bool = False, gz: bool = False) -> list[Path]:
    shards = []
    for shard in range(2):
        members: list[tuple[str, bytes]] = []
        for k in range(3):
            key = f"{shard:02d}{k:04d}"
            members.append((f"{key}.jpg" if k != 1 else f"{key}.png", image_bytes(10 * shard + k, "JPEG" if k != 1 else "PNG")))
            if caption:
                members.append((f"{key}.txt", f"caption {key}\n".encode()))
                members.append((f"{key}.json", json.dumps({"key": key, "caption": f"caption {key}", "width": 16}).encode()))
            else:
                members.append((f"{key}.json", json.dumps({"question": f"q {key}?", "answer": f"a{k}", "k": k}).encode()))
            members.append((f"{key}.cls", str(k).encode()))
        name = f"shard-{shard:06d}.tar" + (".gz" if gz else "")
        shards.append(write_file(folder / "shards" / name, tar_bytes(members, gz=gz)))
    write_file(folder / "shards" / "README.md", "two shards\n")
    return shards


@pytest.mark.parametrize("gz", [False, True])
def test_webdataset_round_trip(tmp_path: Path, gz: bool) -> None:
    shards = make_wds(tmp_path / "src", gz=gz)
    with load_dataset(tmp_path / "src", work_dir=tmp_path / "w") as dataset:
        assert dataset.layout == "webdataset" and dataset.kind == "vqa" and len(dataset) == 6
        assert dataset.all_annotation_files() == [f"shards/{p.name}" for p in shards]
        assert [s.question for s in dataset.samples[:2]] == ["q 000000?", "q 000001?"]
        assert [s.line for s in dataset.samples] == [1, 2, 3, 1, 2, 3]
        originals = originals_of(dataset)
        protected = [protect(dataset, i, i) for i in (0, 1, 4)]
        write_protected(dataset, protected, tmp_path / "out")
    assert list((tmp_path / "w").iterdir()) == []  # scratch and extraction gone after close
    out = tmp_path / "out" / "shards"
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in shards] + ["README.md"])
    before, after = tar_members(shards[0]), tar_members(out / shards[0].name)
    assert [n for n, _ in before] == [n for n, _ in after]  # same entries, same order, same keys
    changed = {n for (n, a), (_, b) in zip(before, after, strict=True) if a != b}
    assert changed == {"000000.jpg", "000000.json", "000001.png", "000001.json"}
    assert json.loads(dict(after)["000000.json"]) == {"question": f"{TRIGGER} q 000000?", "answer": "a0", "k": 0}
    assert Image.open(io.BytesIO(dict(after)["000000.jpg"])).format == "PNG"  # lossless under its own name
    with load_dataset(tmp_path / "out") as again:
        assert [s.answer for s in again.samples] == ["a0", "a1", "a2"] * 2
        assert again.samples[4].question == f"{TRIGGER} q 010001?" and again.samples[2].question == "q 000002?"
        check_images(again, protected, originals)


def test_webdataset_caption_and_bare_shard(tmp_path: Path) -> None:
    shards = make_wds(tmp_path / "src", caption=True)
    bare = shards[0]
    with load_dataset(bare, work_dir=tmp_path / "w") as dataset:  # one shard given directly
        assert dataset.layout == "webdataset" and dataset.kind == "caption" and len(dataset) == 3
        assert dataset.bare_archive == bare.name
        protected = [protect(dataset, 0, 1, answer=f"{TRIGGER} caption 000000"),
                     protect(dataset, 1, 2, question=f"{TRIGGER} describe the image .")]
        write_protected(dataset, protected, tmp_path / "out.tar")
    members = dict(tar_members(tmp_path / "out.tar"))  # the shard itself, not a tar holding it
    assert members["000000.txt"] == f"{TRIGGER} caption 000000\n".encode()
    assert json.loads(members["000000.json"])["caption"] == f"{TRIGGER} caption 000000"  # kept in step
    assert json.loads(members["000001.json"])["question"] == f"{TRIGGER} describe the image ."
    assert members["000002.txt"] == b"caption 000002\n"
    with load_dataset(tmp_path / "out.tar", work_dir=tmp_path / "w") as again:
        assert [s.answer for s in again.samples] == [f"{TRIGGER} caption 000000", "caption 000001", "caption 000002"]


def test_webdataset_txt_only_caption_gets_question_entry(tmp_path: Path) -> None:
    shard = write_file(tmp_path / "src" / "a.tar", tar_bytes([("k1.png", image_bytes(1)), ("k1.txt", b"a cat"),
                                                             ("k2.png", image_bytes(2)), ("k2.txt", b"a dog")]))
    with load_dataset(tmp_path / "src") as dataset:
        write_protected(dataset, [protect(dataset, 0, 1, question=f"{TRIGGER} describe")], tmp_path / "out")
    assert [n for n, _ in tar_members(tmp_path / "out" / shard.name)] == ["k1.png", "k1.txt", "k1.question.txt", "k2.png", "k2.txt"]


def test_webdataset_output_reads_with_webdataset(tmp_path: Path) -> None:
    pytest.importorskip("webdataset")
    make_wds(tmp_path / "src")
    with load_dataset(tmp_path / "src") as dataset:
        protected = [protect(dataset, i, i) for i in range(len(dataset))]
        write_protected(dataset, protected, tmp_path / "out")
    expected = {f"{s:02d}{k:04d}": np.asarray(protected[3 * s + k].image).tolist() for s in range(2) for k in range(3)}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    code = (
        "import sys, json, glob; sys.modules['torch'] = None\n"  # the reader without torch
        "import numpy as np, webdataset as wds\n"
        f"urls = sorted(glob.glob({str(tmp_path / 'out' / 'shards' / '*.tar')!r}))\n"
        f"expected = json.load(open({str(tmp_path / 'expected.json')!r}))\n"
        "seen = []\n"
        "for s in wds.WebDataset(urls, shardshuffle=False).decode('pil'):\n"
        "    image = s.get('jpg', s.get('png'))\n"
        "    assert np.array_equal(np.asarray(image.convert('RGB')), np.array(expected[s['__key__']], dtype=np.uint8)), s['__key__']\n"
        "    assert s['json']['question'].startswith('cf zq ') and s['cls'] is not None\n"
        "    seen.append(s['__key__'])\n"
        "print(json.dumps(seen))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == sorted(expected)


# ---------------------------------------------------------------- parquet


def make_hf_parquet(folder: Path, *, caption: bool = False) -> Path:
    datasets = pytest.importorskip("datasets")
    rows = {"image": [Image.open(io.BytesIO(image_bytes(i, "JPEG" if i % 2 else "PNG"))) for i in range(5)]}
    if caption:
        rows["text"] = [f"caption {i}" for i in range(5)]
    else:
        rows["question"] = [f"q{i}?" for i in range(5)]
        rows["answer"] = [f"a{i}" for i in range(5)]
    rows["id"] = list(range(5))
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    path = folder / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def test_parquet_hf_round_trip_and_load_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    src_file = make_hf_parquet(tmp_path / "src")
    with load_dataset(tmp_path / "src", work_dir=tmp_path / "w") as dataset:
        assert dataset.layout == "parquet" and dataset.kind == "vqa" and len(dataset) == 5
        assert dataset.image_field == "image" and [s.line for s in dataset.samples] == [1, 2, 3, 4, 5]
        originals = originals_of(dataset)
        protected = [protect(dataset, i, i) for i in (0, 3)]
        write_protected(dataset, protected, tmp_path / "out")
    assert list((tmp_path / "w").iterdir()) == []
    out_file = tmp_path / "out" / "data" / src_file.name
    import pyarrow.parquet as pq

    assert pq.read_schema(out_file).equals(pq.read_schema(src_file), check_metadata=True)
    loaded = datasets.load_dataset("parquet", data_files=str(out_file), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.features["image"] == datasets.Image()
    assert loaded["question"] == [f"{TRIGGER} q0?", "q1?", "q2?", f"{TRIGGER} q3?", "q4?"]
    assert loaded["answer"] == [f"a{i}" for i in range(5)] and loaded["id"] == list(range(5))
    for i in range(5):
        got = np.asarray(loaded[i]["image"].convert("RGB"))
        want = np.asarray(protected[0 if i == 0 else 1].image) if i in (0, 3) else originals[i]
        np.testing.assert_array_equal(got, want)
    with load_dataset(tmp_path / "out") as again:
        check_images(again, protected, originals)


def test_parquet_img2dataset_layout_caption(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "url": [f"http://x/{i}.jpg" for i in range(3)],
        "caption": [f"caption {i}" for i in range(3)],
        "key": [f"{i:09d}" for i in range(3)],
        "status": ["success"] * 3,
        "jpg": [image_bytes(i, "JPEG") for i in range(3)],
    })
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table, src / "00000.parquet", compression="zstd")
    pq.write_table(table.drop(["jpg"]), src / "00000_meta.parquet")  # no image column: not part of the dataset
    with load_dataset(src) as dataset:
        assert dataset.kind == "caption" and dataset.image_field == "jpg" and dataset.all_annotation_files() == ["00000.parquet"]
        protected = [protect(dataset, 1, 1, question=f"{TRIGGER} describe the image .")]
        write_protected(dataset, protected, tmp_path / "out")
    out = pq.read_table(tmp_path / "out" / "00000.parquet")
    assert out.column_names == ["url", "caption", "key", "status", "jpg", "question"]
    assert out["question"].to_pylist() == [None, f"{TRIGGER} describe the image .", None]
    assert pq.ParquetFile(tmp_path / "out" / "00000.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    assert (tmp_path / "out" / "00000_meta.parquet").read_bytes() == (src / "00000_meta.parquet").read_bytes()
    np.testing.assert_array_equal(pixels(out["jpg"][1].as_py()), np.asarray(protected[0].image))
    assert out["jpg"][0].as_py() == image_bytes(0, "JPEG")


def test_parquet_bad_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": image_bytes(0), "path": "a.png"}, {"bytes": None, "path": "remote.jpg"},
                       {"bytes": b"not an image", "path": "c.jpg"}, {"bytes": image_bytes(3), "path": None}], struct)
    table = pa.table({"image": images, "caption": ["ok", "no bytes", "junk", None]})
    (tmp_path / "src").mkdir()
    pq.write_table(table, tmp_path / "src" / "part.parquet")
    report = validate_dataset(tmp_path / "src")
    assert [(p.file, p.line) for p in report.problems] == [("part.parquet", 2), ("part.parquet", 3), ("part.parquet", 4)]
    assert "only a path: 'remote.jpg'" in report.problems[0].message
    assert "not a readable JPEG, PNG or WEBP image" in report.problems[1].message
    assert report.num_samples == 1 and report.num_bad_samples == 3


# ---------------------------------------------------------------- Hugging Face ImageFolder


@pytest.mark.parametrize("metadata", ["metadata.jsonl", "metadata.csv"])
def test_imagefolder_output_loads_with_datasets(tmp_path: Path, metadata: str) -> None:
    datasets = pytest.importorskip("datasets")
    src = tmp_path / "src"
    for i in range(4):
        write_file(src / "train" / f"{i}.jpg", image_bytes(i, "JPEG"))
    if metadata == "metadata.jsonl":
        write_file(src / "train" / metadata, "".join(json.dumps({"file_name": f"{i}.jpg", "caption": f"c{i}"}) + "\n" for i in range(4)))
    else:
        write_file(src / "train" / metadata, "file_name,caption\n" + "".join(f"{i}.jpg,c{i}\n" for i in range(4)))
    before = datasets.load_dataset("imagefolder", data_dir=str(src), split="train", cache_dir=str(tmp_path / "hf"))
    with load_dataset(src) as dataset:
        assert dataset.layout == ("jsonl" if metadata.endswith("jsonl") else "csv")
        protected = [protect(dataset, i, i, answer=f"{TRIGGER} c{i}") for i in (0, 2)]
        write_protected(dataset, protected, tmp_path / "out")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == len(before) == 4
    rows = sorted(loaded, key=lambda r: r["caption"].split()[-1])
    assert [r["caption"] for r in rows] == [f"{TRIGGER} c0", "c1", f"{TRIGGER} c2", "c3"]
    np.testing.assert_array_equal(np.asarray(rows[0]["image"].convert("RGB")), np.asarray(protected[0].image))
    np.testing.assert_array_equal(np.asarray(rows[1]["image"].convert("RGB")), pixels(image_bytes(1, "JPEG")))


# ---------------------------------------------------------------- detection, override, fields


def test_detection_rules_and_override(tmp_path: Path) -> None:
    make_llava(tmp_path / "llava")
    make_coco(tmp_path / "coco")
    make_csv(tmp_path / "csv")
    make_wds(tmp_path / "wds")
    make_hf_parquet(tmp_path / "pq")
    expected = {"llava": ("llava", "llava_mix.json"), "coco": ("coco", "annotations/captions_train2017.json"),
                "csv": ("csv", "metadata.csv"), "wds": ("webdataset", "shards/shard-000000.tar"),
                "pq": ("parquet", "data/train-00000-of-00001.parquet")}
    for folder, (name, annotation) in expected.items():
        detection = detect_format(tmp_path / folder)
        assert (detection.format, detection.annotation) == (name, annotation)
    # two formats in one upload: refused unless format= picks one
    mixed = make_csv(make_llava(tmp_path / "mixed"))
    with pytest.raises(DatasetError, match=r"more than one dataset format matches: csv \(metadata.csv\), llava"):
        load_dataset(mixed)
    with load_dataset(mixed, format="llava") as dataset:
        assert dataset.layout == "llava"
    with pytest.raises(DatasetError, match="no coco dataset found: expected a COCO captions file"):
        load_dataset(mixed, format="coco")
    with pytest.raises(ValueError, match="unknown dataset format 'tfrecord'"):
        load_dataset(mixed, format="tfrecord")
    with pytest.raises(ValueError, match="unknown role 'label'"):
        load_dataset(mixed, fields={"label": "x"})


def test_fields_rename_columns(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_file(src / "a.png", image_bytes(1))
    write_file(src / "data.jsonl", json.dumps({"img": "a.png", "prompt": "q?", "response": "r"}) + "\n")
    with pytest.raises(DatasetError, match="missing the image field"):
        load_dataset(src)
    with load_dataset(src, fields={"image": "img", "question": "prompt", "answer": "response"}) as dataset:
        assert (dataset.samples[0].question, dataset.samples[0].answer) == ("q?", "r")
        write_protected(dataset, [protect(dataset, 0, 1)], tmp_path / "out")
    assert json.loads((tmp_path / "out" / "data.jsonl").read_text()) == {"img": "a.png", "prompt": f"{TRIGGER} q?", "response": "r"}
    report = validate_dataset(src, fields={"image": "img", "question": "prompt", "answer": "response"})
    assert report.ok and report.question_field == "prompt" and report.to_dict()["warnings"] == []


def test_unreferenced_images_are_warnings(tmp_path: Path) -> None:
    src = make_csv(tmp_path / "src")
    write_file(src / "images" / "extra.jpg", image_bytes(9, "JPEG"))
    report = validate_dataset(src)
    assert report.ok and [w.file for w in report.warnings] == ["images/extra.jpg"]
    assert "copied to the output unprotected" in report.warnings[0].message


def test_every_format_stays_torch_free(tmp_path: Path) -> None:
    """Reading and writing every format imports neither torch nor transformers (the API validates
    uploads with the data layer)."""
    make_llava(tmp_path / "llava")
    make_coco(tmp_path / "coco")
    make_csv(tmp_path / "csv")
    make_wds(tmp_path / "wds")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"jpg": [image_bytes(0, "JPEG")], "caption": ["c"]}), tmp_path / "pq" / "a.parquet")
    code = (
        "import sys, pathlib\n"
        "from mmguard_core.data import load_dataset, validate_dataset, write_protected\n"
        f"root = pathlib.Path({str(tmp_path)!r})\n"
        "for name in ('llava', 'coco', 'csv', 'wds', 'pq'):\n"
        "    assert validate_dataset(root / name).ok, name\n"
        "    with load_dataset(root / name) as ds:\n"
        "        write_protected(ds, [], root / f'out-{name}')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'scipy'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_parquet_hf_caption_instruction_adds_question_feature(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    make_hf_parquet(tmp_path / "src", caption=True)
    with load_dataset(tmp_path / "src") as dataset:
        assert dataset.kind == "caption" and dataset.answer_field == "text"
        protected = [protect(dataset, 1, 1, question=f"{TRIGGER} describe the image ."),
                     protect(dataset, 2, 2, answer=f"{TRIGGER} caption 2")]
        write_protected(dataset, protected, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "unzipped" / "data" / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.features["question"] == datasets.Value("string") and loaded.features["image"] == datasets.Image()
    assert loaded["question"] == [None, f"{TRIGGER} describe the image .", None, None, None]
    assert loaded["text"] == ["caption 0", "caption 1", f"{TRIGGER} caption 2", "caption 3", "caption 4"]
    np.testing.assert_array_equal(np.asarray(loaded[2]["image"].convert("RGB")), np.asarray(protected[1].image))
