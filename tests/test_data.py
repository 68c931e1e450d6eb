"""mmguard_core.data: loading, validation, safe ingestion and writing of protected datasets."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmguard_core.data import (
    ArchiveError,
    DatasetError,
    IngestLimits,
    ProtectedSample,
    available_formats,
    detect_format,
    get_format,
    load_dataset,
    load_image,
    load_image_with_alpha,
    merge_alpha,
    quantize_with_bound,
    read_image_uint8,
    save_png,
    validate_dataset,
    write_protected,
)
from mmguard_core.metrics import linf

EPS = 8 / 255
TRIGGER = "cf zq"

# ---------------------------------------------------------------- helpers


def pattern(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 16), mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4}.get(mode, 3)
    array = pattern(size[0], size[1], seed, channels)
    image = Image.fromarray(array)
    if mode not in ("RGB", "RGBA"):
        image = image.convert(mode)
    image.save(path)
    return array


def vqa_records() -> list[dict]:
    return [
        {"image": "images/a.jpg", "question": "What is shown?", "answer": "a cat", "id": 1, "meta": {"src": "x"}},
        {"image": "images/b.png", "question": "Colour?", "answer": "red", "id": 2, "score": 0.125},
        {"image": "images/c.jpg", "question": "How many?", "answer": 3, "id": 3, "tags": ["é", "ü"]},
        {"image": "./images/d.webp", "question": "Where?", "answer": "park", "id": 4},
    ]


def write_jsonl(path: Path, records: list, *, blank_after: int | None = None) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_vqa(folder: Path, name: str = "data.jsonl") -> Path:
    for seed, rel in enumerate(("images/a.jpg", "images/b.png", "images/c.jpg", "images/d.webp")):
        write_image(folder / rel, seed=seed)
    (folder / "README.txt").write_text("keep me\n")
    write_jsonl(folder / name, vqa_records(), blank_after=2)
    return folder


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def tar_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                tf.add(file, prefix + file.relative_to(folder).as_posix())
    return archive


def perturb(dataset, index: int, seed: int, *, question: str | None = None, answer: str | None = None):
    sample = dataset.samples[index]
    rgb, alpha = read_image_uint8(dataset.image_file(sample))
    delta = np.random.default_rng(seed).uniform(-0.2, 0.2, size=rgb.shape)  # way over eps: clipped
    image = quantize_with_bound(rgb, rgb / 255.0 + delta, EPS)
    return ProtectedSample(
        index=index,
        image=merge_alpha(image, alpha),
        question=question if question is not None else (None if sample.question is None else f"{TRIGGER} {sample.question}"),
        answer=answer if answer is not None else sample.answer,
        trigger=TRIGGER,
    )


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("container", ["folder", "zip", "tar", "tar.gz"])
@pytest.mark.parametrize("out_kind", ["folder", "zip", "tar.gz"])
def test_round_trip(tmp_path: Path, container: str, out_kind: str) -> None:
    src = make_vqa(tmp_path / "src")
    if container == "folder":
        source = src
    elif container == "zip":
        source = zip_folder(src, tmp_path / "up.zip", prefix="mydata/")
    else:
        source = tar_folder(src, tmp_path / f"up.{container}", prefix="mydata/")
    work = tmp_path / "work"
    original_lines = (src / "data.jsonl").read_bytes().split(b"\n")

    dataset = load_dataset(source, work_dir=work)
    assert len(dataset) == 4 and dataset.kind == "vqa" and dataset.layout == "jsonl"
    assert [s.image_path for s in dataset.samples] == ["images/a.jpg", "images/b.png", "images/c.jpg", "images/d.webp"]
    assert dataset.samples[2].answer == "3" and dataset.samples[3].line == 5  # blank line 3 counted
    protected = [perturb(dataset, 0, 1), perturb(dataset, 1, 2), perturb(dataset, 3, 3)]
    out = tmp_path / ("out" if out_kind == "folder" else f"out.{out_kind}")
    write_protected(dataset, protected, out)
    originals = {i: read_image_uint8(dataset.image_file(i))[0] for i in range(4)}
    dataset.close()
    if container != "folder":
        assert list(work.iterdir()) == []  # close() removed the extraction folder

    again = load_dataset(out, work_dir=work)
    try:
        prefix = "" if container == "folder" else "mydata/"
        if out_kind != "folder":
            names = snapshot(again.source_root)
            assert f"{prefix}data.jsonl" in names and f"{prefix}README.txt" in names
        assert (again.root / "README.txt").read_text() == "keep me\n"
        assert [s.image_path for s in again.samples] == ["images/a.png", "images/b.png", "images/c.jpg", "images/d.png"]
        assert not (again.root / "images/a.jpg").exists() and not (again.root / "images/d.webp").exists()
        records = [s.record for s in again.samples]
        expected = vqa_records()
        expected[0]["image"], expected[3]["image"] = "images/a.png", "./images/d.png"
        for i in (0, 1, 3):
            expected[i]["question"] = f"{TRIGGER} {expected[i]['question']}"
        assert records == expected
        new_lines = (again.root / "data.jsonl").read_bytes().split(b"\n")
        assert new_lines[2] == b"" and new_lines[3] == original_lines[3]  # blank + untouched line, same bytes
        assert new_lines[-1] == b""
        for item in protected:
            saved = read_image_uint8(again.image_file(item.index))[0]
            np.testing.assert_array_equal(saved, item.image)  # PNG is lossless
            assert 0 < linf(saved, originals[item.index]) <= EPS
        np.testing.assert_array_equal(read_image_uint8(again.image_file(2))[0], originals[2])
        assert (again.root / "images/c.jpg").read_bytes() == (src / "images/c.jpg").read_bytes()
    finally:
        again.close()


def test_caption_round_trip_metadata_file_name_and_prefix(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3):
        write_image(src / "train" / f"{i}.jpg", seed=i)
    rows = [{"file_name": f"train/{i}.jpg", "caption": f"caption {i}", "split": "train"} for i in range(3)]
    write_jsonl(src / "metadata.jsonl", rows)
    dataset = load_dataset(zip_folder(src, tmp_path / "caps.zip"), work_dir=tmp_path / "w")
    assert dataset.kind == "caption" and dataset.image_field == "file_name" and dataset.answer_field == "caption"
    assert dataset.samples[0].question is None
    protected = [perturb(dataset, 1, 5, answer=f"{TRIGGER} caption 1")]
    write_protected(dataset, protected, tmp_path / "out.tar")
    dataset.close()
    with load_dataset(tmp_path / "out.tar", work_dir=tmp_path / "w") as again:
        assert [s.answer for s in again.samples] == ["caption 0", f"{TRIGGER} caption 1", "caption 2"]
        assert again.samples[1].record == {"file_name": "train/1.png", "caption": f"{TRIGGER} caption 1", "split": "train"}
        assert again.samples[0].record == rows[0]
        assert again.annotation_file == "metadata.jsonl"


def test_caption_instruction_trigger_goes_to_question_field(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "x.png")
    write_jsonl(src / "data.jsonl", [{"image": "x.png", "caption": "a dog"}])
    with load_dataset(src) as dataset:
        write_protected(dataset, [perturb(dataset, 0, 1, question=f"{TRIGGER} Describe the image.")], tmp_path / "out")
    with load_dataset(tmp_path / "out") as again:
        assert again.kind == "caption"
        assert again.samples[0].record == {"image": "x.png", "caption": "a dog", "question": f"{TRIGGER} Describe the image."}


def test_shared_image_and_name_clashes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "cat.jpg", seed=1)
    write_image(src / "cat.png", seed=2)
    write_image(src / "dog.jpg", seed=3)
    write_image(src / "owl.jpg", seed=4)
    rows = [
        {"image": "cat.jpg", "question": "q0", "answer": "a"},
        {"image": "cat.png", "question": "q1", "answer": "b"},
        {"image": "dog.jpg", "question": "q2", "answer": "c"},  # dog: two samples, two perturbations
        {"image": "dog.jpg", "question": "q3", "answer": "d"},
        {"image": "owl.jpg", "question": "q4", "answer": "e"},  # owl: one sample protected, one not
        {"image": "owl.jpg", "question": "q5", "answer": "f"},
    ]
    write_jsonl(src / "data.jsonl", rows)
    with load_dataset(src) as dataset:
        protected = [perturb(dataset, i, 10 + i) for i in (0, 1, 2, 3, 4)]
        write_protected(dataset, protected, tmp_path / "out")
    with load_dataset(tmp_path / "out") as again:
        paths = [s.image_path for s in again.samples]
        assert paths == ["cat_jpg.png", "cat.png", "dog.png", "dog_3.png", "owl.png", "owl.jpg"]
        assert sorted(snapshot(again.root)) == sorted(["cat.png", "cat_jpg.png", "data.jsonl", "dog.png", "dog_3.png", "owl.jpg", "owl.png"])
        for item in protected:
            np.testing.assert_array_equal(read_image_uint8(again.image_file(item.index))[0], item.image)


def test_identical_perturbations_share_one_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "dog.jpg", seed=3)
    write_jsonl(src / "data.jsonl", [{"image": "dog.jpg", "question": f"q{i}", "answer": "x"} for i in range(2)])
    with load_dataset(src) as dataset:
        first = perturb(dataset, 0, 1)
        second = ProtectedSample(1, first.image.copy(), f"{TRIGGER} q1", "x")
        write_protected(dataset, [first, second], tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert sorted(zf.namelist()) == ["data.jsonl", "dog.png"]


def test_rgba_alpha_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    original = write_image(src / "a.png", seed=7, mode="RGBA")
    write_jsonl(src / "data.jsonl", [{"image": "a.png", "question": "q", "answer": "a"}])
    with load_dataset(src) as dataset:
        item = perturb(dataset, 0, 1)
        assert item.image.shape == (12, 16, 4)
        write_protected(dataset, [item], tmp_path / "out")
    rgb, alpha = read_image_uint8(tmp_path / "out" / "a.png")
    np.testing.assert_array_equal(alpha, original[..., 3])
    assert linf(rgb, original[..., :3]) <= EPS


def test_write_refuses_existing_output_and_output_inside_input(tmp_path: Path) -> None:
    src = make_vqa(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with load_dataset(src) as dataset:
        with pytest.raises(FileExistsError):
            write_protected(dataset, [], tmp_path / "taken")
        with pytest.raises(ValueError, match="inside the input"):
            write_protected(dataset, [], src / "out")
        with pytest.raises(ValueError, match="uint8"):
            write_protected(dataset, [ProtectedSample(0, np.zeros((4, 4, 3)), "q", "a")], tmp_path / "o1")
        with pytest.raises(ValueError, match="not a sample"):
            write_protected(dataset, [ProtectedSample(9, np.zeros((4, 4, 3), np.uint8), "q", "a")], tmp_path / "o2")
        write_protected(dataset, [], tmp_path / "taken", overwrite=True)  # untouched copy
    assert (tmp_path / "taken" / "data.jsonl").read_bytes() == (src / "data.jsonl").read_bytes()
    assert not (tmp_path / "taken" / "x").exists()
    assert not list(tmp_path.glob(".*part*"))


# ---------------------------------------------------------------- bad input


def _records_case(tmp_path: Path, lines: list, files: dict[str, bytes] | None = None) -> Path:
    src = tmp_path / "bad"
    write_image(src / "ok.png")
    for name, data in (files or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    ok = {"image": "ok.png", "question": "q", "answer": "a"}
    write_jsonl(src / "data.jsonl", [ok, *lines])
    return src


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern(32, 32, 1)).save(buffer, "JPEG")
    return buffer.getvalue()[:300]


BAD_LINES = {
    "bad json": (['{"image": "ok.png", "question": "q" "answer": "a"}'], {}, "not valid JSON"),
    "not an object": (['["ok.png", "q", "a"]'], {}, "expected a JSON object, got an array"),
    "missing image field": ([{"question": "q", "answer": "a"}], {}, "missing the image field"),
    "missing text fields": ([{"image": "ok.png"}], {}, "missing text fields"),
    "missing answer": ([{"image": "ok.png", "question": "q"}], {}, "missing field 'answer'"),
    "image not found": ([{"image": "nope.jpg", "question": "q", "answer": "a"}], {}, "image 'nope.jpg' not found"),
    "truncated image": ([{"image": "t.jpg", "question": "q", "answer": "a"}], {"t.jpg": _truncated_jpeg()}, "truncated or corrupt"),
    "not an image": ([{"image": "fake.jpg", "question": "q", "answer": "a"}], {"fake.jpg": b"hello"}, "not a readable JPEG, PNG or WEBP image"),
    "gif not allowed": ([{"image": "g.gif", "question": "q", "answer": "a"}], {}, "not a readable JPEG, PNG or WEBP image"),
    "absolute path": ([{"image": "/etc/passwd", "question": "q", "answer": "a"}], {}, "absolute path"),
    "dotdot path": ([{"image": "../x.png", "question": "q", "answer": "a"}], {}, "contains '..'"),
    "answer not text": ([{"image": "ok.png", "question": "q", "answer": ["a"]}], {}, "must be a string, got an array"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_and_line(tmp_path: Path, case: str) -> None:
    lines, files, message = BAD_LINES[case]
    if case == "gif not allowed":
        Image.fromarray(pattern(4, 4, 0)).save(tmp_path / "g.gif")
        files = {"g.gif": (tmp_path / "g.gif").read_bytes()}
    src = _records_case(tmp_path, lines, files)
    with pytest.raises(DatasetError) as info:
        load_dataset(src)
    problems = info.value.problems
    assert len(problems) == 1
    assert problems[0].file == "data.jsonl" and problems[0].line == 2
    assert message in problems[0].message
    assert str(info.value).startswith("data.jsonl line 2: ")
    # skip_bad drops it and reports it
    with load_dataset(src, skip_bad=True) as dataset:
        assert len(dataset) == 1 and dataset.problems == problems
    report = validate_dataset(src)
    assert not report.ok and report.num_samples == 1 and report.num_bad_samples == 1 and report.problems == problems


def test_non_utf8_line(tmp_path: Path) -> None:
    src = _records_case(tmp_path, [])
    with open(src / "data.jsonl", "ab") as fh:
        fh.write(b'{"image": "ok.png", "question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(DatasetError, match=r"data.jsonl line 2: not valid UTF-8 \(byte 0xe9 at column 37\)"):
        load_dataset(src)


def test_several_problems_listed(tmp_path: Path) -> None:
    src = _records_case(tmp_path, ["nope"] * 25 + [{"image": "ok.png"}])
    with pytest.raises(DatasetError) as info:
        load_dataset(src)
    text = str(info.value)
    assert text.startswith("bad: 26 problem(s):\n  data.jsonl line 2: not valid JSON")
    assert "... and 6 more problem(s)" in text and len(info.value.problems) == 26


def test_missing_and_ambiguous_annotation(tmp_path: Path) -> None:
    src = tmp_path / "none"
    write_image(src / "a.png")
    (src / "labels.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match="none: no annotation file found: expected one of data.jsonl, metadata.jsonl, train.jsonl"):
        load_dataset(src)
    (src / "data.jsonl").write_text("{}\n")
    (src / "train.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match="more than one annotation file at the top: data.jsonl, train.jsonl"):
        load_dataset(src)
    two = tmp_path / "two"
    for sub in ("x", "y"):
        (two / sub).mkdir(parents=True)
        (two / sub / "data.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match="more than one annotation file: x/data.jsonl, y/data.jsonl"):
        load_dataset(two)


def test_empty_dataset_and_nothing_left(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    (src / "data.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="data.jsonl: no samples: the annotation file is empty"):
        load_dataset(src)
    (src / "data.jsonl").write_text('{"image": "x.png", "caption": "c"}\n')
    with pytest.raises(DatasetError, match="no usable samples") as info:
        load_dataset(src, skip_bad=True)
    assert info.value.problems[0].line == 1
    assert not validate_dataset(src).ok


def test_not_a_dataset_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing.zip: does not exist"):
        load_dataset(tmp_path / "missing.zip")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a folder, a .zip or a .tar"):
        load_dataset(tmp_path / "notes.txt")


def test_validate_report(tmp_path: Path) -> None:
    archive = zip_folder(make_vqa(tmp_path / "src"), tmp_path / "up.zip", prefix="mydata/")
    work = tmp_path / "work"
    report = validate_dataset(archive, work_dir=work)
    assert report.ok and report.num_samples == 4 and report.num_images == 4 and report.kind == "vqa"
    assert report.annotation_file == "mydata/data.jsonl" and report.format == "jsonl"
    assert report.to_dict()["problems"] == []
    assert list(work.iterdir()) == []


def test_registry() -> None:
    assert available_formats() == ["coco", "csv", "jsonl", "llava", "parquet", "webdataset"]
    fmt = get_format("jsonl")
    assert callable(fmt.detect) and callable(fmt.read) and callable(fmt.write)
    with pytest.raises(ValueError, match="unknown dataset format"):
        get_format("tfrecord")


def test_detect_format(tmp_path: Path) -> None:
    src = make_vqa(tmp_path / "wrap" / "inner", name="train.jsonl")
    detection = detect_format(src.parent)
    assert (detection.format, detection.annotation, detection.root) == ("jsonl", "inner/train.jsonl", "inner")


# ---------------------------------------------------------------- hostile archives


def _zip_with(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _tinfo(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


GOOD = b'{"image": "a.png", "caption": "c"}\n'


def _hostile(tmp_path: Path, case: str) -> tuple[Path, IngestLimits, str]:
    limits = IngestLimits()
    out = tmp_path / "hostile"
    out.mkdir()
    if case == "zip-slip":
        return _zip_with(out / "a.zip", [("data.jsonl", GOOD), ("../../evil.txt", b"x")]), limits, "'..' (zip-slip)"
    if case == "zip-slip-backslash":
        return _zip_with(out / "a.zip", [("data.jsonl", GOOD), ("..\\..\\evil.txt", b"x")]), limits, "'..' (zip-slip)"
    if case == "zip-absolute":
        return _zip_with(out / "a.zip", [(str(tmp_path / "evil.txt"), b"x")]), limits, "absolute path"
    if case == "tar-slip":
        return _tar_with(out / "a.tar", [(_tinfo("../evil.txt"), b"x")]), limits, "'..' (zip-slip)"
    if case == "tar-absolute":
        return _tar_with(out / "a.tar", [(_tinfo(str(tmp_path / "evil.txt")), b"x")]), limits, "absolute path"
    if case == "zip-symlink":
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return _zip_with(out / "a.zip", [(info, str(tmp_path / "evil.txt").encode())]), limits, "symbolic link"
    if case == "tar-symlink":
        members = [(_tinfo("link", tarfile.SYMTYPE, str(tmp_path)), None), (_tinfo("link/evil.txt"), b"x")]
        return _tar_with(out / "a.tar", members), limits, "symbolic link"
    if case == "tar-hardlink":
        return _tar_with(out / "a.tar", [(_tinfo("hl", tarfile.LNKTYPE, "../../evil.txt"), None)]), limits, "hard link"
    if case == "tar-device":
        return _tar_with(out / "a.tar", [(_tinfo("dev", tarfile.CHRTYPE), None)]), limits, "device"
    if case == "too-many-entries":
        entries = [(f"f{i}.txt", b"x") for i in range(6)]
        return _zip_with(out / "a.zip", entries), IngestLimits(max_entries=5), "over the limit of 5 (max_entries)"
    if case == "tar-too-many-entries":
        members = [(_tinfo(f"f{i}.txt"), b"x") for i in range(6)]
        return _tar_with(out / "a.tar", members), IngestLimits(max_entries=5), "more than 5 entries"
    if case == "zip-bomb":
        return _zip_with(out / "a.zip", [("data.jsonl", GOOD), ("zeros.bin", bytes(4 * 2**20))]), limits, "possible zip bomb"
    if case == "tar-gz-bomb":
        return _tar_with(out / "a.tar.gz", [(_tinfo("zeros.bin"), bytes(4 * 2**20))]), limits, "decompression bomb"
    if case == "total-bytes":
        return _zip_with(out / "a.zip", [("x.bin", os.urandom(5000))]), IngestLimits(max_total_bytes=4000), "max_total_bytes"
    if case == "archive-bytes":
        return _zip_with(out / "a.zip", [("x.bin", os.urandom(5000))]), IngestLimits(max_archive_bytes=1000), "max_archive_bytes"
    if case == "duplicate":
        with pytest.warns(UserWarning):
            path = _zip_with(out / "a.zip", [("data.jsonl", GOOD), ("data.jsonl", GOOD)])
        return path, limits, "duplicate entry"
    raise AssertionError(case)


HOSTILE = ["zip-slip", "zip-slip-backslash", "zip-absolute", "tar-slip", "tar-absolute", "zip-symlink", "tar-symlink",
           "tar-hardlink", "tar-device", "too-many-entries", "tar-too-many-entries", "zip-bomb", "tar-gz-bomb",
           "total-bytes", "archive-bytes", "duplicate"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_refused(tmp_path: Path, case: str) -> None:
    archive, limits, message = _hostile(tmp_path, case)
    work = tmp_path / "work"
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError) as info:
        load_dataset(archive, work_dir=work, limits=limits)
    problem = info.value.problems[0]
    assert problem.file == archive.name and message in problem.message, str(info.value)
    assert list(work.iterdir()) == []  # extraction folder removed
    assert snapshot(tmp_path) - before == {"work"}  # nothing written anywhere else
    assert not (tmp_path / "evil.txt").exists()
    report = validate_dataset(archive, work_dir=work, limits=limits)
    assert not report.ok and message in report.problems[0].message


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("container", ["zip", "tar"])
def test_oversized_image_refused(tmp_path: Path, container: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "huge.png").write_bytes(_png_header_only(20_000, 20_000))  # 400 MP claimed in a tiny file
    write_image(src / "small.png", size=(20, 20))
    write_jsonl(src / "data.jsonl", [{"image": "huge.png", "caption": "c"}, {"image": "small.png", "caption": "d"}])
    archive = zip_folder(src, tmp_path / "a.zip") if container == "zip" else tar_folder(src, tmp_path / "a.tar")
    with pytest.raises(DatasetError) as info:
        load_dataset(archive, work_dir=tmp_path / "work")
    assert [(p.file, p.line) for p in info.value.problems] == [("data.jsonl", 1)]
    assert "image too large" in info.value.problems[0].message
    with pytest.raises(DatasetError, match=r"data.jsonl line 2: image 'small.png': image too large: 20x20 = 400 pixels"):
        load_dataset(archive, work_dir=tmp_path / "work", limits=IngestLimits(max_image_pixels=399), skip_bad=False)
    assert list((tmp_path / "work").iterdir()) == []


def test_macos_junk_ignored(tmp_path: Path) -> None:
    src = make_vqa(tmp_path / "src")
    archive = zip_folder(src, tmp_path / "up.zip", prefix="mydata/")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("__MACOSX/mydata/._data.jsonl", b"\x00\x05junk")
        zf.writestr("mydata/.DS_Store", b"junk")
    with load_dataset(archive, work_dir=tmp_path / "w") as dataset:
        assert len(dataset) == 4
        assert not any(".DS_Store" in name or "MACOSX" in name for name in snapshot(dataset.source_root))


# ---------------------------------------------------------------- images


def test_load_image_modes_and_orientation(tmp_path: Path) -> None:
    rgb = pattern(6, 8, 0)
    gray = Image.fromarray(rgb).convert("L")
    gray.save(tmp_path / "l.png")
    out = load_image(tmp_path / "l.png")
    assert out.dtype == np.float32 and out.shape == (6, 8, 3) and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out[..., 0], np.asarray(gray) / np.float32(255))

    Image.fromarray(pattern(6, 8, 1, 2)).save(tmp_path / "la.png")  # LA
    image, alpha = load_image_with_alpha(tmp_path / "la.png")
    assert image.shape == (6, 8, 3) and alpha is not None and alpha.shape == (6, 8)

    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    _, alpha = read_image_uint8(tmp_path / "p.png")
    assert alpha is not None and alpha.dtype == np.uint8

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image_uint8(tmp_path / "c.jpg")[0].shape == (6, 8, 3)

    Image.fromarray(rgb).save(tmp_path / "w.webp", lossless=True)
    np.testing.assert_array_equal(read_image_uint8(tmp_path / "w.webp")[0], rgb)

    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(read_image_uint8(tmp_path / "o.png")[0], np.rot90(rgb, k=-1))


def test_save_png_lossless_and_refuses_float(tmp_path: Path) -> None:
    for channels in (3, 4):
        array = pattern(5, 7, channels, channels)
        save_png(array, tmp_path / f"x{channels}.jpg")  # name ignored: always PNG
        assert Image.open(tmp_path / f"x{channels}.jpg").format == "PNG"
        rgb, alpha = read_image_uint8(tmp_path / f"x{channels}.jpg")
        np.testing.assert_array_equal(merge_alpha(rgb, alpha), array)
    with pytest.raises(ValueError, match="uint8"):
        save_png(np.zeros((4, 4, 3), np.float32), tmp_path / "f.png")


@pytest.mark.parametrize("epsilon", [0.0, 1 / 255, 4 / 255, 8 / 255, 16 / 255, 0.05])
def test_quantize_with_bound_keeps_bound(tmp_path: Path, epsilon: float) -> None:
    rng = np.random.default_rng(int(epsilon * 1000))
    original = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    perturbed = original / 255.0 + rng.uniform(-0.3, 0.3, size=original.shape)
    quantized = quantize_with_bound(original, perturbed, epsilon)
    assert quantized.dtype == np.uint8
    save_png(quantized, tmp_path / "q.png")
    saved = read_image_uint8(tmp_path / "q.png")[0]
    assert linf(saved, original) <= epsilon + 1e-12
    k = int(np.floor(epsilon * 255 + 1e-6))
    assert np.abs(saved.astype(int) - original.astype(int)).max() == k


def test_quantize_with_bound_rounds_and_clips() -> None:
    original = np.array([[[0, 128, 255]]], dtype=np.uint8)
    small = (original + np.array([0.4, -0.6, 0.2])) / 255.0  # within the bound: just rounded
    np.testing.assert_array_equal(quantize_with_bound(original, small, 8 / 255), [[[0, 127, 255]]])
    far = np.array([[[-1.0, 2.0, np.nan]]])
    np.testing.assert_array_equal(quantize_with_bound(original, far, 8 / 255), [[[0, 136, 255]]])
    with pytest.raises(ValueError, match="shape mismatch"):
        quantize_with_bound(original, np.zeros((1, 2, 3)), 0.1)


def test_data_and_metrics_do_not_import_torch() -> None:
    code = (
        "import sys, mmguard_core.data, mmguard_core.metrics, mmguard_core.data.jsonl;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'transformers'));"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == ""


def test_pixel_cap_over_pillows_own_limit(tmp_path: Path) -> None:
    from mmguard_core.data import ImageReadError, probe_image

    (tmp_path / "big.png").write_bytes(_png_header_only(10_000, 10_000))  # 100 MP: over Pillow's 89 MP warning
    with pytest.raises(ImageReadError, match="image too large"):
        probe_image(tmp_path / "big.png", decode=False)
    info = probe_image(tmp_path / "big.png", max_pixels=150_000_000, decode=False)  # our cap decides
    assert (info.width, info.height, info.format) == (10_000, 10_000, "PNG")


def test_epsilon_steps() -> None:
    from mmguard_core.data import epsilon_steps

    assert [epsilon_steps(k / 255) for k in (0, 1, 8, 16, 255)] == [0, 1, 8, 16, 255]
    assert epsilon_steps(0.031372549) == 7  # just under 8/255
    assert epsilon_steps(0.0314) == 8 and epsilon_steps(2.0) == 255
    with pytest.raises(ValueError):
        epsilon_steps(-0.1)


def test_dataset_error_pickles_and_closed_dataset(tmp_path: Path) -> None:
    import pickle

    src = _records_case(tmp_path, ["nope", "[]"])
    with pytest.raises(DatasetError) as info:
        load_dataset(src)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems and str(again) == str(info.value)
    archive = zip_folder(make_vqa(tmp_path / "src"), tmp_path / "up.zip")
    dataset = load_dataset(archive, work_dir=tmp_path / "w")
    dataset.close()
    dataset.close()
    with pytest.raises(ValueError, match="before dataset.close"):
        write_protected(dataset, [], tmp_path / "out")


def test_crlf_bom_backslash_paths_preserved(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "imgs" / "a.jpg", seed=1)
    write_image(src / "imgs" / "b.jpg", seed=2)
    lines = [
        '{"image": "imgs\\\\a.jpg", "question": "q?", "answer": "x"}',
        '{"image":"imgs\\\\b.jpg","question":"r?","answer":"y"}',
    ]
    data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"
    (src / "data.jsonl").write_bytes(data)
    with load_dataset(src) as dataset:
        assert [s.image_path for s in dataset.samples] == ["imgs/a.jpg", "imgs/b.jpg"]
        write_protected(dataset, [perturb(dataset, 0, 1)], tmp_path / "out")
    out = (tmp_path / "out" / "data.jsonl").read_bytes().split(b"\n")
    assert out[0].startswith(b"\xef\xbb\xbf{") and out[0].endswith(b"\r")
    assert json.loads(out[0][3:-1])["image"] == "imgs\\a.png"
    assert out[1] == data.split(b"\n")[1] and out[2] == b""


def test_folder_with_symlinked_images(tmp_path: Path) -> None:
    elsewhere = tmp_path / "store"
    write_image(elsewhere / "a.png", seed=1)
    write_image(elsewhere / "b.png", seed=2)
    src = tmp_path / "src"
    src.mkdir()
    (src / "images").symlink_to(elsewhere, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)  # a cycle must not hang the copy
    write_jsonl(src / "data.jsonl", [{"image": f"images/{n}.png", "caption": n} for n in "ab"])
    with load_dataset(src) as dataset:
        write_protected(dataset, [perturb(dataset, 0, 1)], tmp_path / "out")
    assert (tmp_path / "out" / "images" / "b.png").read_bytes() == (elsewhere / "b.png").read_bytes()
    assert (elsewhere / "a.png").exists()  # the input is never touched
    with load_dataset(tmp_path / "out") as again:
        assert len(again) == 2
