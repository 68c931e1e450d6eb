"""A generated corpus of hostile and broken uploads, in every format, through the library and through
the CLI (`mmguard protect`): each is refused with exit code 2 and a message naming the file at fault
(and the line where there is one), nothing is written outside the private temp area, and the output
is never created. (The API side of the same corpus is in tests/service.)

The CLI runs in ONE subprocess that calls the `mmguard` entry point (mmguard_core.cli:main) once per
case, so torch is imported once; one case also runs the installed `mmguard` script itself."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from mmguard_core.data import ArchiveError, DatasetError, IngestLimits, load_dataset, validate_dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_formats import (  # noqa: E402
    image_bytes,
    make_coco,
    make_csv,
    make_llava,
    make_wds,
    tar_bytes,
    write_file,
)

REPO = Path(__file__).resolve().parent.parent
CLI_FAST = ["--zoo-size", "test", "--surrogate", "zoo:llava", "--preset", "fast", "-q"]


@dataclass
class Case:
    name: str
    path: Path  # what is handed to load_dataset / `mmguard protect`
    file: str  # the file the first problem must name
    message: str  # a piece of that problem's message
    limits: IngestLimits = field(default_factory=IngestLimits)  # the CLI only gets the default-limit cases

    @property
    def default_limits(self) -> bool:
        return self.limits == IngestLimits()


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _truncated_jpeg() -> bytes:
    return image_bytes(1, "JPEG", size=(64, 64))[:300]


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jsonl(rows: list) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()


OK_ROW = {"image": "ok.png", "question": "q", "answer": "a"}


def build_corpus(root: Path) -> list[Case]:
    """Every hostile / broken case, as archives (and a few folders) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    ok_png = image_bytes(0)
    cases: list[Case] = []

    def add(name: str, path: Path, file: str, message: str, limits: IngestLimits | None = None) -> None:
        cases.append(Case(name, path, file, message, limits or IngestLimits()))

    # -- archives themselves
    add("zip-slip", _zip(root / "slip.zip", [("data.jsonl", _jsonl([OK_ROW])), ("../../evil.txt", b"x")]),
        "slip.zip", "'..' (zip-slip)")
    add("zip-absolute", _zip(root / "abs.zip", [("/tmp/evil-abs.txt", b"x")]), "abs.zip", "absolute path")
    add("tar-absolute", _tar(root / "abs.tar", [("/tmp/evil-abs.txt", b"x")]), "abs.tar", "absolute path")
    add("tar-symlink", _tar(root / "sym.tar", [_link("link", "/etc", tarfile.SYMTYPE), ("link/evil.txt", b"x")]),
        "sym.tar", "symbolic link")
    add("tar-hardlink", _tar(root / "hard.tar", [_link("hl", "/etc/passwd", tarfile.LNKTYPE)]), "hard.tar", "hard link")
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    add("zip-symlink", _zip(root / "sym.zip", [(info, b"/etc/passwd")]), "sym.zip", "symbolic link")
    add("zip-bomb", _zip(root / "bomb.zip", [("data.jsonl", _jsonl([OK_ROW])), ("zeros.bin", bytes(4 << 20))]),
        "bomb.zip", "possible zip bomb")
    add("tar-gz-bomb", _tar(root / "bomb.tar.gz", [("zeros.bin", bytes(4 << 20))], gz=True), "bomb.tar.gz",
        "decompression bomb")
    dup = root / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("data.jsonl", b"{}")
        zf.writestr("data.jsonl", b"{}")
    add("duplicate-entry", dup, "dup.zip", "duplicate entry")
    write_file(root / "garbage.zip", b"PK\x03\x04 this is not a zip")
    add("not-a-zip", root / "garbage.zip", "garbage.zip", "not a readable zip archive")
    add("too-many-entries", _zip(root / "many.zip", [(f"f{i}.txt", b"x") for i in range(6)]), "many.zip",
        "max_entries", IngestLimits(max_entries=5))
    add("archive-bytes", _zip(root / "big.zip", [("x.bin", os.urandom(5000))]), "big.zip", "max_archive_bytes",
        IngestLimits(max_archive_bytes=1000))
    add("total-bytes", _zip(root / "total.zip", [("x.bin", os.urandom(5000))]), "total.zip", "max_total_bytes",
        IngestLimits(max_total_bytes=4000))

    latin = root / "latin-name.tar"
    with tarfile.open(latin, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        member = tarfile.TarInfo(b"caf\xe9.png".decode("utf-8", "surrogateescape"))
        member.size = 1
        tf.addfile(member, io.BytesIO(b"x"))
    add("tar-non-utf8-name", latin, "latin-name.tar", "name is not valid UTF-8")
    add("case-clash", _zip(root / "case.zip", [("data.jsonl", _jsonl([OK_ROW])), ("ok.png", ok_png), ("OK.png", ok_png)]),
        "ok.png", "differs from 'OK.png' only in upper/lower case")

    # -- JSONL contents
    def jsonl_zip(name: str, rows: list, files: dict[str, bytes]) -> Path:
        return _zip(root / name, [("data.jsonl", _jsonl(rows)), ("ok.png", ok_png), *files.items()])

    add("truncated-image", jsonl_zip("trunc.zip", [OK_ROW, {"image": "t.jpg", "question": "q", "answer": "a"}],
                                     {"t.jpg": _truncated_jpeg()}), "data.jsonl", "image 't.jpg': image is truncated or corrupt")
    add("not-an-image", jsonl_zip("fake.zip", [OK_ROW, {"image": "fake.png", "question": "q", "answer": "a"}],
                                  {"fake.png": b"<html>not an image</html>"}), "data.jsonl", "not a readable JPEG, PNG or WEBP")
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    add("gif-refused", jsonl_zip("gif.zip", [OK_ROW, {"image": "x.gif", "question": "q", "answer": "a"}],
                                 {"x.gif": gif.getvalue()}), "data.jsonl", "not a readable JPEG, PNG or WEBP")
    add("missing-image", jsonl_zip("missing.zip", [OK_ROW, {"image": "gone.jpg", "question": "q", "answer": "a"}], {}),
        "data.jsonl", "image 'gone.jpg' not found")
    add("pixel-bomb", jsonl_zip("pixels.zip", [OK_ROW, {"image": "huge.png", "question": "q", "answer": "a"}],
                                {"huge.png": _png_header(30_000, 30_000)}), "data.jsonl", "image too large")
    add("bad-json-line", jsonl_zip("badjson.zip", [OK_ROW, '{"image": "ok.png", "question": "q" "answer": "a"}'], {}),
        "data.jsonl", "line 2: not valid JSON")
    add("non-utf8-jsonl", _zip(root / "latin.zip", [("data.jsonl", b'{"image": "ok.png", "question": "caf\xe9", "answer": "a"}\n'),
                                                    ("ok.png", ok_png)]), "data.jsonl", "not valid UTF-8")
    add("path-escape", jsonl_zip("escape.zip", [OK_ROW, {"image": "../../etc/passwd", "question": "q", "answer": "a"}], {}),
        "data.jsonl", "contains '..'")
    add("url-image", jsonl_zip("url.zip", [OK_ROW, {"image": "http://evil.example/x.jpg", "question": "q", "answer": "a"}], {}),
        "data.jsonl", "is a URL")
    add("nul-in-path", jsonl_zip("nul.zip", [OK_ROW, {"image": "a\u0000.png", "question": "q", "answer": "a"}], {}),
        "data.jsonl", "contains a control character")
    add("lone-surrogate-path", jsonl_zip("surrogate.zip", [OK_ROW, {"image": "\ud800.png", "question": "q", "answer": "a"}], {}),
        "data.jsonl", "invalid code point")
    add("inline-base64-image", jsonl_zip("base64.zip", [OK_ROW, {"image": base64.b64encode(ok_png * 20).decode(),
                                                             "question": "q", "answer": "a"}], {}),
        "data.jsonl", "too long for a file path (is it inline image data")
    add("lone-surrogate-answer", jsonl_zip("surrogate-text.zip", [OK_ROW, '{"image": "ok.png", "question": "q", '
                                                                  '"answer": "nice \\ud83d"}'], {}),
        "data.jsonl", "field 'answer' contains an invalid code point")
    add("huge-integer", jsonl_zip("bignum.zip", [OK_ROW, '{"image": "ok.png", "question": "q", "answer": "a", "n": '
                                                 + "9" * 5000 + "}"], {}),
        "data.jsonl", "line 2: not valid JSON: a number with more than 4300 digits")
    add("no-annotation", _zip(root / "noann.zip", [("ok.png", ok_png), ("notes.txt", b"hi")]), "noann.zip",
        "no annotation file found")
    add("empty-annotation", _zip(root / "empty.zip", [("data.jsonl", b"\n\n"), ("ok.png", ok_png)]), "data.jsonl",
        "no samples")

    # -- CSV contents
    csv_ok = "file_name,question,answer\nok.png,q,a\n"
    add("csv-non-utf8", _zip(root / "csvlatin.zip", [("metadata.csv", (csv_ok + "ok.png,caf").encode() + b"\xe9,a\n"),
                                                      ("ok.png", ok_png)]), "metadata.csv", "line 3: not valid UTF-8")
    add("csv-short-row", _zip(root / "csvshort.zip", [("metadata.csv", (csv_ok + "ok.png,only\n").encode()), ("ok.png", ok_png)]),
        "metadata.csv", "has 2 fields, the header has 3")
    add("csv-no-image-column", _zip(root / "csvcols.zip", [("metadata.csv", b"path_to_it,caption\nok.png,c\n"), ("ok.png", ok_png)]),
        "metadata.csv", "no image column")

    # -- LLaVA / COCO contents
    add("llava-bad-json", _zip(root / "llava.zip", [("chat.json", b'[{"image": "ok.png", "conversations": [}]'), ("ok.png", ok_png)]),
        "chat.json", "not valid JSON")
    add("llava-deep-nesting", _zip(root / "deep.zip", [("chat.json", b'[{"conversations": ' + b"[" * 200_000 + b"]" * 200_000 + b"}]"),
                                                       ("ok.png", ok_png)]), "chat.json", "nested too deeply")
    add("llava-huge-integer", _zip(root / "llavabig.zip", [("chat.json", b'[{"image": "ok.png", "id": ' + b"9" * 5000
                                                           + b', "conversations": []}]'), ("ok.png", ok_png)]),
        "chat.json", "a number with more than 4300 digits")
    add("llava-no-gpt-turn", _zip(root / "noturn.zip", [("chat.json", json.dumps([{"image": "ok.png", "conversations": [
        {"from": "human", "value": "<image>\nq"}]}]).encode()), ("ok.png", ok_png)]), "chat.json", "no gpt turn")
    add("coco-unknown-image", _zip(root / "coco.zip", [("captions.json", json.dumps({"images": [{"id": 1, "file_name": "ok.png"}],
        "annotations": [{"image_id": 2, "caption": "c"}]}).encode()), ("ok.png", ok_png)]), "captions.json", "image_id 2 is not in 'images'")
    add("annotation-too-big", _zip(root / "bigann.zip", [("chat.json", json.dumps([{"image": "ok.png", "conversations": [
        {"from": "human", "value": "x" * 5000}, {"from": "gpt", "value": "y"}]}]).encode()), ("ok.png", ok_png)]),
        "chat.json", "max_annotation_bytes", IngestLimits(max_annotation_bytes=1000))

    # -- WebDataset shards
    good = [("k1.png", ok_png), ("k1.txt", b"a cat")]
    add("wds-slip", _zip(root / "wdsslip.zip", [("s/000.tar", tar_bytes([*good, ("../k2.png", ok_png), ("../k2.txt", b"x")]))]),
        "s/000.tar", "entry '../k2.png': refused: path contains '..'")
    add("wds-absolute", _zip(root / "wdsabs.zip", [("000.tar", tar_bytes([*good, ("/etc/k2.png", ok_png)]))]),
        "000.tar", "absolute path")
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tf:
        for name, data in good:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        tf.addfile(_link("k2.png", "/etc/passwd", tarfile.SYMTYPE))
    add("wds-symlink", _zip(root / "wdssym.zip", [("000.tar", shard.getvalue())]), "000.tar", "symbolic link")
    add("wds-duplicate", _zip(root / "wdsdup.zip", [("000.tar", tar_bytes([*good, ("k1.png", ok_png)]))]),
        "000.tar", "duplicate entry")
    add("wds-gz-bomb", _zip(root / "wdsbomb.zip", [("000.tar.gz", tar_bytes([*good, ("k2.bin", bytes(8 << 20))], gz=True))]),
        "000.tar.gz", "decompression bomb")
    add("wds-truncated-image", _zip(root / "wdstrunc.zip", [("000.tar", tar_bytes([*good, ("k2.jpg", _truncated_jpeg()), ("k2.txt", b"x")]))]),
        "000.tar", "truncated or corrupt")
    add("wds-bad-json", _zip(root / "wdsjson.zip", [("000.tar", tar_bytes([*good, ("k2.png", ok_png), ("k2.json", b"{nope")]))]),
        "000.tar", "k2.json is not valid JSON")
    add("wds-truncated-shard", _zip(root / "wdscut.zip", [("000.tar", tar_bytes([*good, ("k2.png", image_bytes(2, size=(64, 64))),
                                                                                     ("k2.txt", b"x")])[:1500])]),
        "000.tar", "truncated")
    add("wds-too-many-entries", _zip(root / "wdsmany.zip", [("000.tar", tar_bytes([(f"k{i}.{ext}", ok_png if ext == "png" else b"x")
                                                                          for i in range(4) for ext in ("png", "txt")]))]),
        "000.tar", "max_entries", IngestLimits(max_entries=5))
    add("bare-shard-slip", _tar(root / "bare.tar", [*good, ("../../k2.png", ok_png)]), "bare.tar", "'..' (zip-slip)")

    # -- parquet
    add("parquet-garbage", _zip(root / "pqjunk.zip", [("data/train.parquet", b"PAR1 definitely not parquet PAR1")]),
        "data/train.parquet", "not a readable parquet file")
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("hostile")
    return root, build_corpus(root / "corpus")


def _snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---------------------------------------------------------------- through the library


def test_corpus_through_the_library(corpus, tmp_path: Path) -> None:
    root, cases = corpus
    failures = []
    for case in cases:
        work = tmp_path / case.name
        before = _snapshot(root)
        try:
            load_dataset(case.path, work_dir=work, limits=case.limits)
        except DatasetError as exc:
            problem = exc.problems[0]
            if problem.file != case.file or case.message not in str(exc):
                failures.append(f"{case.name}: {exc!s} (wanted {case.file}: ...{case.message}...)")
        else:
            failures.append(f"{case.name}: accepted")
        leftovers = list(work.iterdir()) if work.exists() else []
        if leftovers:
            failures.append(f"{case.name}: left {leftovers} in the work dir")
        if _snapshot(root) != before:
            failures.append(f"{case.name}: wrote {_snapshot(root) - before}")
        report = validate_dataset(case.path, work_dir=work, limits=case.limits)
        if report.ok or not any(case.message in str(p) for p in report.problems):
            failures.append(f"{case.name}: validate_dataset said {report}")
    assert not Path("/tmp/evil-abs.txt").exists()
    assert failures == []


def test_archive_errors_are_archive_errors(corpus, tmp_path: Path) -> None:
    _, cases = corpus
    for case in cases:
        if case.name in ("zip-slip", "tar-symlink", "wds-slip", "wds-symlink", "wds-gz-bomb", "bare-shard-slip"):
            with pytest.raises(ArchiveError):
                load_dataset(case.path, work_dir=tmp_path, limits=case.limits)


def test_skip_bad_accepts_the_rest_and_writes_nothing_bad(tmp_path: Path) -> None:
    """A broken sample among good ones: refused as a whole by default, accepted with skip_bad and
    left out of the output, in every format."""
    from test_formats import protect

    from mmguard_core.data import write_protected

    llava = make_llava(tmp_path / "llava")
    write_file(llava / "images" / "coco" / "b.png", b"not a png")
    coco = make_coco(tmp_path / "coco")
    write_file(coco / "train2017" / "000008.png", _truncated_jpeg())
    csv_dir = make_csv(tmp_path / "csv")
    (csv_dir / "images" / "b.png").unlink()
    wds = tmp_path / "wds"
    make_wds(wds)
    with tarfile.open(wds / "shards" / "shard-000000.tar") as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf]  # type: ignore[union-attr]
    members[0] = (members[0][0], b"\xff\xd8\xff truncated")
    write_file(wds / "shards" / "shard-000000.tar", tar_bytes(members))
    for folder, n_good in ((llava, 2), (coco, 3), (csv_dir, 2), (wds, 5)):
        with pytest.raises(DatasetError):
            load_dataset(folder)
        with load_dataset(folder, skip_bad=True) as dataset:
            assert len(dataset) == n_good and dataset.problems, folder.name
            write_protected(dataset, [protect(dataset, 0, 1)], tmp_path / f"out-{folder.name}")
        with load_dataset(tmp_path / f"out-{folder.name}") as again:  # the output is clean: loads without skip_bad
            assert len(again) == n_good


# ---------------------------------------------------------------- through the CLI

DRIVER = """
import contextlib, io, json, sys
from mmguard_core.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results[name] = [code, err.getvalue(), out.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_results(corpus) -> tuple[Path, dict[str, list], list[Case]]:
    root, cases = corpus
    cli_cases = [c for c in cases if c.default_limits]
    runs = []
    for case in cli_cases:
        runs.append((case.name, ["protect", str(case.path), "-o", str(root / "out" / f"{case.name}.zip"), *CLI_FAST]))
    # good datasets through the same entry point: COCO (one protected image per image file) and WebDataset
    make_coco(root / "good" / "coco")
    make_wds(root / "good" / "wds")
    for name in ("coco", "wds"):
        runs.append((f"good-{name}", ["protect", str(root / "good" / name), "-o", str(root / "out" / f"good-{name}"),
                                      "--report", str(root / "out" / f"good-{name}.json"), *CLI_FAST]))
    tmp = root / "tmpdir"  # the CLI's private temp area: must be empty again after every run
    tmp.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp))
    before = _snapshot(root / "corpus")
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], capture_output=True, text=True,
                            env=env, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _snapshot(root / "corpus") == before
    assert [p.name for p in tmp.iterdir() if p.name.startswith("mmguard")] == []  # (torch keeps a cache there)
    return root, json.loads(result.stdout.strip().splitlines()[-1]), cli_cases


def test_cli_refuses_every_hostile_case(cli_results) -> None:
    root, results, cases = cli_results
    failures = []
    for case in cases:
        code, err, _ = results[case.name]
        if code != 2 or not err.startswith("error: ") or case.file not in err or case.message not in err:
            failures.append(f"{case.name}: exit {code}: {err.strip()[:300]!r} (wanted {case.file}: ...{case.message}...)")
        if (root / "out" / f"{case.name}.zip").exists():
            failures.append(f"{case.name}: output written")
    assert len(cases) >= 30 and failures == []
    assert not (root / "evil.txt").exists() and not (root.parent / "evil.txt").exists()
    leftovers = [p.name for p in (root / "out").iterdir()] if (root / "out").exists() else []
    assert all(name.startswith("good-") for name in leftovers), leftovers


def test_cli_protects_coco_and_webdataset(cli_results) -> None:
    root, results, _ = cli_results
    for name, layout, n in (("coco", "coco", 5), ("wds", "webdataset", 6)):
        code, err, out = results[f"good-{name}"]
        assert code == 0, err
        assert f"protected {n} samples" in out and f", {layout})" in out
        report = json.loads((root / "out" / f"good-{name}.json").read_text())
        assert report["summary"]["linf_max"] <= 8 / 255 + 1e-9
    with load_dataset(root / "out" / "good-coco") as coco:
        groups = coco.image_groups()
        assert sorted(groups) == ["train2017/000007.png", "train2017/000008.png"]  # one file per image
        assert all("describe the image ." in s.record.get("question", "") for s in coco.samples)
    assert sorted(p.name for p in (root / "out" / "good-coco" / "train2017").iterdir()) == [
        "000007.png", "000008.png", "000009.jpg"]
    with load_dataset(root / "out" / "good-wds") as wds:
        assert len(wds) == 6 and all(re.fullmatch(r"[a-z ]+ q \d+\? [a-z ]+", s.question) for s in wds.samples)


def test_installed_mmguard_script(corpus, tmp_path: Path) -> None:
    """The console script itself (not only its entry point) on one hostile upload."""
    root, cases = corpus
    script = Path(sys.executable).with_name("mmguard")
    if not script.exists():
        script_path = shutil.which("mmguard")
        if script_path is None:
            pytest.skip("the mmguard console script is not installed")
        script = Path(script_path)
    case = next(c for c in cases if c.name == "wds-slip")
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    result = subprocess.run([str(script), "protect", str(case.path), "-o", str(tmp_path / "out.zip"), *CLI_FAST],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: s/000.tar: entry '../k2.png': refused: path contains '..' (zip-slip)")
    assert not (tmp_path / "out.zip").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mmguard")] == []
