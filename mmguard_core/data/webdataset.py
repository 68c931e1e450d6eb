"""The "webdataset" format: WebDataset .tar shards (also .tar.gz / .tgz).

A shard is a tar whose consecutive files sharing a key form one sample: `<key>.jpg|jpeg|png|webp`
(the image) plus `<key>.txt` (a caption) and/or `<key>.json` (an object with `question` + `answer`,
or `caption`; names settable with fields=). The key is the path up to the first dot of the file
name, as webdataset splits it; other files of a sample (.cls, .npy, ...) are kept as they are.
Detected: *.tar shards (plain ones checked to hold key.image + key.txt|json pairs; .tar.gz/.tgz by
name) at the top of the upload or up to two folders down - every such shard is part of the dataset.
A plain .tar given directly whose first entries look like a shard is read as a one-shard dataset
(DatasetFormat.claims_archive), and written to a .tar path it gives that shard itself.

Read safely: shards are streamed (tarfile, never a pipe: URL, nothing decoded but JPEG/PNG/WebP
images, UTF-8 text and JSON - no pickle, no torch.load); entry names are checked like archive
entries (no '..', no absolute path, no link or device), entry count and bytes count against
IngestLimits (with the compression-ratio check for compressed shards). Each sample's image is copied
out to a private folder for the engine.

Written back as shards with the same names, the same entries in the same order and the same keys:
the protected image replaces the image's bytes under its own name (PNG bytes - decoders sniff the
content, so pipelines asking for "jpg" keep working - lossless), the trigger goes into the question
of the .json (VQA) or, for caption data, into the .txt caption (caption-prefix placement) or a
"question" member of the .json; a sample that has no .json gets a `<key>.question.txt` entry for
the instruction. Samples dropped as bad (skip_bad) are left out of the shards. Problems name the
shard and the sample's 1-based position in it as the line.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import jsonspan
from .archive import IngestLimits, _ratio_exceeded, safe_relative_parts
from .common import find_files
from .errors import ArchiveError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate
from .sample import Dataset, Sample

NAME = "webdataset"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")
QUESTION_FIELD = "question"
ANSWER_FIELD = "answer"
CAPTION_FIELD = "caption"
MAX_TEXT_BYTES = 16 * 1024 * 1024  # one .txt / .json entry
SNIFF_MEMBERS = 64
# names that mark a tar as a packed dataset folder, not a shard
_NOT_SHARD_EXTS = ("jsonl", "csv", "parquet", "tar", "tar.gz", "tgz", "zip")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
DESCRIPTION = ("WebDataset shards: *.tar files of <key>.jpg|png|webp + <key>.txt|json entries (at the top "
               "level or up to two folders down), or one such .tar given directly")


def split_key(name: str) -> tuple[str | None, str | None]:
    """(key, extension lower-cased) as webdataset splits an entry name; (None, None) without a dot."""
    match = _KEY.match(name)
    if not match:
        return None, None
    return match.group(1), match.group(2).lower()


def _compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        magic = fh.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def looks_like_shard(path: Path) -> bool:
    """A plain tar whose first entries group into key.image + key.txt|json samples (read by seeking
    over entry headers, no data read). Compressed shards are taken by name (.tar.gz / .tgz)."""
    name = path.name.lower()
    if not name.endswith(SHARD_SUFFIXES):
        return False
    if _compressed(path):
        return name.endswith((".tar.gz", ".tgz"))
    groups: dict[str, set[str]] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for _ in range(SNIFF_MEMBERS):
                member = tf.next()
                if member is None:
                    break
                if member.isdir():
                    continue
                key, ext = split_key(member.name)
                if ext is not None and (ext in _NOT_SHARD_EXTS or ext.endswith(_NOT_SHARD_EXTS)):
                    return False
                if key is not None and ext is not None:
                    groups.setdefault(key, set()).add(ext)
    except (tarfile.TarError, EOFError, zlib.error):
        return bool(groups)  # broken after a good start: a shard whose fault read() reports
    return any(exts & set(IMAGE_EXTS) and exts & set(TEXT_EXTS) for exts in groups.values())


def claims_archive(path: Path) -> bool:
    """A plain .tar given directly that is itself a shard (not a packed folder)."""
    return path.name.lower().endswith(".tar") and not _compressed(path) and looks_like_shard(path)


def detect(container: Path) -> Detection | None:
    shards = find_files(container, SHARD_SUFFIXES, looks_like_shard, depth=2)
    if not shards:
        return None
    return Detection(NAME, shards[0], files=tuple(shards))


# ---------------------------------------------------------------- reading


@dataclass
class _Entry:
    member: tarfile.TarInfo
    ext: str


@dataclass
class _Group:
    key: str
    number: int  # 1-based position of the sample in the shard
    entries: list[_Entry] = field(default_factory=list)
    image: str | None = None  # entry name of the (first) image
    images: list[str] = field(default_factory=list)
    texts: dict[str, bytes | str] = field(default_factory=dict)  # ext -> bytes, or why it was not read
    problem: str | None = None


class _ShardReader:
    """Streams one shard: checks every entry, copies images out, keeps text entries."""

    def __init__(self, path: Path, rel: str, scratch: Path, limits: IngestLimits, budget: dict[str, int]):
        self.path = path
        self.rel = rel
        self.scratch = scratch
        self.limits = limits
        self.budget = budget  # shared across shards: entries, bytes
        self.size = path.stat().st_size
        self.compressed = _compressed(path)
        self.names: set[str] = set()

    def refuse(self, message: str, entry: str | None = None) -> ArchiveError:
        text = f"entry {entry!r}: {message}" if entry is not None else message
        return ArchiveError(Problem(self.rel, None, text))

    def _count(self, name: str, nbytes: int) -> None:
        self.budget["entries"] += 1
        if self.budget["entries"] > self.limits.max_entries:
            raise self.refuse(f"more than {self.limits.max_entries} entries in the shards (limit max_entries)", name)
        self.budget["bytes"] += nbytes
        if self.budget["bytes"] > self.limits.max_total_bytes:
            raise self.refuse(f"shards expand to more than {self.limits.max_total_bytes} bytes (limit max_total_bytes)", name)

    def _read(self, source: IO[bytes], name: str, cap: int | None) -> bytes | None:
        chunks, total = [], 0
        while True:
            chunk = source.read(1 << 20)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            self._check_ratio(name, total)
            if cap is not None and total > cap:
                return None
            chunks.append(chunk)

    def _check_ratio(self, name: str, pending: int) -> None:
        if self.compressed and _ratio_exceeded(self.budget["shard_bytes"] + pending, self.size, self.limits):
            raise self.refuse(f"shard expands more than {self.limits.max_compression_ratio:g} times its size "
                              "(possible decompression bomb)", name)

    def _copy_out(self, source: IO[bytes], name: str, parts: tuple[str, ...]) -> None:
        target = self.scratch.joinpath(self.rel, *parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError:
            raise self.refuse("duplicate entry", name) from None
        written = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                self._check_ratio(name, written)
                out.write(chunk)

    def groups(self) -> Iterator[_Group]:
        mode = "r|*"
        try:
            tf = tarfile.open(self.path, mode=mode)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(Problem(self.rel, None, f"not a readable tar shard ({exc})")) from exc
        self.budget["shard_bytes"] = 0
        current: _Group | None = None
        seen_keys: set[str] = set()
        number = 0
        try:
            with tf:
                for member in tf:
                    name = member.name
                    parts = safe_relative_parts(name)
                    if isinstance(parts, str):
                        raise self.refuse(f"refused: {parts}", name)
                    if member.issym() or member.islnk():
                        raise self.refuse(f"refused: {'symbolic' if member.issym() else 'hard'} link", name)
                    if member.isdir():
                        continue
                    if not member.isreg():
                        raise self.refuse("refused: device, FIFO or other special entry", name)
                    self._count(name, member.size)
                    self._check_ratio(name, member.size)  # before the entry is read (or skipped)
                    folded = "/".join(parts).casefold()
                    if folded in self.names:
                        raise self.refuse("duplicate entry", name)
                    self.names.add(folded)
                    key, ext = split_key("/".join(parts))
                    if key is None or ext is None:
                        self.budget["shard_bytes"] += member.size
                        continue
                    if current is None or key != current.key:
                        if current is not None:
                            yield current
                        number += 1
                        current = _Group(key, number)
                        if key in seen_keys:
                            current.problem = f"sample key {key!r} appears twice (its files are not together)"
                        seen_keys.add(key)
                    current.entries.append(_Entry(member, ext))
                    source = tf.extractfile(member)
                    if source is None:  # pragma: no cover - regular members have data
                        continue
                    with source:
                        if ext in IMAGE_EXTS:
                            current.images.append(name)
                            if current.image is None:
                                self._copy_out(source, name, parts)
                                current.image = "/".join(parts)
                        elif ext in TEXT_EXTS:
                            data = self._read(source, name, MAX_TEXT_BYTES)
                            current.texts[ext] = data if data is not None else f"{name} is over {MAX_TEXT_BYTES} bytes"
                    self.budget["shard_bytes"] += member.size
                if current is not None:
                    yield current
        except ArchiveError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ArchiveError(Problem(self.rel, None, f"shard is corrupt or truncated ({exc})")) from exc


def _decode(data: bytes | str, name: str) -> str | tuple[str]:
    if isinstance(data, str):
        return (data,)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{name} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",)


def _strip_newline(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


@dataclass(frozen=True)
class _Names:
    question: str
    answer: str
    caption: str


def _sample_text(group: _Group, names: _Names) -> tuple[str, str | None, str, dict[str, Any]] | str:
    """(kind, question, answer, record) of a group, or what is wrong. record: {"json": obj or None,
    "txt": caption text or None, "text_from": "json" | "txt"}."""
    obj = None
    if "json" in group.texts:
        text = _decode(group.texts["json"], f"{group.key}.json")
        if isinstance(text, tuple):
            return text[0]
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{group.key}.json is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        except RecursionError:
            return f"{group.key}.json is not valid JSON: nested too deeply"
        except ValueError:
            return f"{group.key}.json is not valid JSON: {jsonspan.NUMBER_TOO_LONG}"
        if not isinstance(obj, dict):
            obj = None if "txt" in group.texts else obj
            if obj is not None:
                return f"{group.key}.json must hold a JSON object"
    caption = None
    if "txt" in group.texts:
        text = _decode(group.texts["txt"], f"{group.key}.txt")
        if isinstance(text, tuple):
            return text[0]
        caption = _strip_newline(text)
    record = {"json": obj, "txt": caption}
    if obj is not None and names.answer in obj:
        question, answer = obj.get(names.question), obj[names.answer]
        if isinstance(answer, int | float) and not isinstance(answer, bool):
            answer = json.dumps(answer)
        if not isinstance(question, str):
            return f"{group.key}.json: '{names.question}' must be a string beside '{names.answer}'"
        if not isinstance(answer, str) or not answer.strip():
            return f"{group.key}.json: '{names.answer}' must be a non-empty string"
        return "vqa", question, answer, {**record, "text_from": "json"}
    if caption is not None:
        if not caption.strip():
            return f"{group.key}.txt is empty"
        return "caption", None, caption, {**record, "text_from": "txt"}
    if obj is not None and names.caption in obj:
        value = obj[names.caption]
        if not isinstance(value, str) or not value.strip():
            return f"{group.key}.json: '{names.caption}' must be a non-empty string"
        return "caption", None, value, {**record, "text_from": "json"}
    return (f"no text: needs {group.key}.txt (a caption) or {group.key}.json with "
            f"'{names.question}' + '{names.answer}' or '{names.caption}'")


def read(container: Path, detection: Detection, limits: IngestLimits, scratch: Path) -> tuple[Dataset, list[Problem]]:
    names = _Names(detection.field("question", QUESTION_FIELD) or QUESTION_FIELD,
                   detection.field("answer", ANSWER_FIELD) or ANSWER_FIELD,
                   detection.field("caption", CAPTION_FIELD) or CAPTION_FIELD)
    budget = {"entries": 0, "bytes": 0, "shard_bytes": 0}
    samples: list[Sample] = []
    problems: list[Problem] = []
    reserved: set[str] = set()
    kind_seen: tuple[str, str, int] | None = None  # (kind, shard, number) that decided it
    payload: dict[str, set[int]] = {}  # shard -> numbers of the groups holding an image or text
    for rel in detection.all_files():
        path = container / rel
        if path.stat().st_size > limits.max_archive_bytes:
            raise ArchiveError(Problem(rel, None, f"shard is {path.stat().st_size} bytes, over the limit of "
                                                  f"{limits.max_archive_bytes} (max_archive_bytes)"))
        reader = _ShardReader(path, rel, scratch, limits, budget)
        for group in reader.groups():
            has_payload = group.images or group.texts
            if not has_payload:
                continue  # e.g. only .cls / .npy entries: kept as they are, not a sample
            payload.setdefault(rel, set()).add(group.number)
            if group.problem:
                problems.append(Problem(rel, group.number, group.problem))
                continue
            if group.image is None:
                problems.append(Problem(rel, group.number, f"sample {group.key!r} has no image ({', '.join(IMAGE_EXTS)})"))
                continue
            if len(group.images) > 1:
                problems.append(Problem(rel, group.number, f"sample {group.key!r} has several images "
                                                           f"({', '.join(group.images)}); keep one"))
                continue
            result = _sample_text(group, names)
            if isinstance(result, str):
                problems.append(Problem(rel, group.number, f"sample {group.key!r}: {result}"))
                continue
            kind, question, answer, record = result
            if kind_seen is None:
                kind_seen = (kind, rel, group.number)
            elif kind != kind_seen[0]:
                problems.append(Problem(rel, group.number, f"sample {group.key!r} is {kind} data but the shards are "
                                                           f"{kind_seen[0]} data ({kind_seen[1]} sample {kind_seen[2]})"))
                continue
            samples.append(Sample(index=len(samples), image_path=f"{rel}/{group.image}", answer=answer,
                                  question=question, record=record, line=group.number, source=rel,
                                  locator=(rel, group.number)))
        reserved.update(f"{rel}/{n}".casefold() for n in reader.names)
    files = list(detection.all_files())
    kind = kind_seen[0] if kind_seen else "vqa"
    dataset = Dataset(
        root=scratch,
        samples=samples,
        layout=NAME,
        annotation_file=files[0],
        annotation_files=files,
        image_field="jpg|jpeg|png|webp",
        question_field=names.question,
        answer_field=names.answer if kind == "vqa" else names.caption,
        reserved_names=reserved,
        options={"payload": payload},
    )
    return dataset, problems


# ---------------------------------------------------------------- writing


def _json_with(data: bytes, edits: dict[str, str]) -> bytes:
    """The .json entry with some members set, every other byte kept."""
    text = data.decode("utf-8")
    bom = text.startswith(jsonspan.BOM)
    body = text[1:] if bom else text
    start = jsonspan.skip_ws(body, 0)
    _, members, order, end = jsonspan.scan_object(body, start)
    ascii_only = jsonspan.uses_ascii_escapes(body)
    changes = [jsonspan.add_member_edit(body, members, order, key, value, ascii_only, end) for key, value in edits.items()]
    new = jsonspan.splice(body, 0, len(body), _sequential(body, changes))
    return (jsonspan.BOM + new if bom else new).encode("utf-8")


def _sequential(text: str, edits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Merge insertions at the same offset (several new members after the last one) into one edit."""
    merged: dict[tuple[int, int], str] = {}
    for a, b, new in edits:
        merged[(a, b)] = merged.get((a, b), "") + new if a == b else new
    return [(a, b, new) for (a, b), new in merged.items()]


def _info_like(member: tarfile.TarInfo, name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = member.mtime
    info.mode = member.mode
    info.uid, info.gid, info.uname, info.gname = member.uid, member.gid, member.uname, member.gname
    info.type = tarfile.REGTYPE
    return info


def _add_bytes(dst: tarfile.TarFile, member: tarfile.TarInfo, name: str, data: bytes) -> None:
    dst.addfile(_info_like(member, name, len(data)), io.BytesIO(data))


def _write_shard(rel: str, source: Path, target: Path, samples: dict[int, Sample], payload: set[int],
                 updates: Mapping[int, SampleUpdate], dataset: Dataset) -> None:
    """Copy the shard entry by entry, numbering samples as the reader did; entries of samples dropped
    as bad are left out, the protected ones get their new image and text."""
    compressed = _compressed(source)
    question_ext = f"{dataset.question_field}.txt"
    options: dict[str, Any] = {"compresslevel": 6} if compressed else {}
    with tarfile.open(source, "r|*") as src, tarfile.open(str(target), "w:gz" if compressed else "w",
                                                            format=tarfile.PAX_FORMAT, **options) as dst:
        pending: tuple[tarfile.TarInfo, str, bytes] | None = None  # an entry to add after the sample's last
        current_key: str | None = None
        number = 0
        for member in src:
            if member.isdir():
                dst.addfile(member)
                continue
            key, ext = split_key("/".join(safe_relative_parts(member.name)))  # type: ignore[arg-type]
            if key is None:
                dst.addfile(member, src.extractfile(member))
                continue
            if key != current_key:
                if pending is not None:
                    _add_bytes(dst, *pending)
                    pending = None
                current_key = key
                number += 1
            sample = samples.get(number)
            if sample is None and number in payload:
                continue  # a sample dropped as bad: all its entries are left out
            data_source = src.extractfile(member)
            update = updates.get(sample.index) if sample is not None else None
            if sample is None or update is None:
                dst.addfile(member, data_source)
                continue
            record = sample.record
            raw_needed = ext in TEXT_EXTS or ext == question_ext
            raw = data_source.read() if raw_needed and data_source is not None else b""
            if ext in IMAGE_EXTS and update.image_file is not None:
                _add_bytes(dst, member, member.name, update.image_file.read_bytes())
            elif ext == "txt":
                if record["text_from"] == "txt" and update.answer is not None:
                    text = raw.decode("utf-8")
                    raw = (update.answer + text[len(_strip_newline(text)):]).encode("utf-8")
                _add_bytes(dst, member, member.name, raw)
                base = member.name[: len(member.name) - len(".txt")]
                if (update.question is not None and record["json"] is None
                        and f"{rel}/{base}.{question_ext}".casefold() not in dataset.reserved_names):
                    pending = (member, f"{base}.{question_ext}", update.question.encode("utf-8"))
            elif ext == question_ext and update.question is not None and record["json"] is None:
                _add_bytes(dst, member, member.name, update.question.encode("utf-8"))
            elif ext == "json" and isinstance(record["json"], dict):
                edits: dict[str, str] = {}
                if update.question is not None:
                    edits[dataset.question_field] = update.question
                if update.answer is not None and record["text_from"] == "json":
                    edits[dataset.answer_field] = update.answer
                elif update.answer is not None and record["json"].get(dataset.answer_field) == record["txt"]:
                    edits[dataset.answer_field] = update.answer  # the same caption kept in both entries
                _add_bytes(dst, member, member.name, _json_with(raw, edits) if edits else raw)
            elif raw_needed:
                _add_bytes(dst, member, member.name, raw)
            else:
                dst.addfile(member, data_source)
        if pending is not None:
            _add_bytes(dst, *pending)


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate], staging: Path) -> dict[str, Path]:
    base = dataset.annotation_base
    by_shard: dict[str, dict[int, Sample]] = {}
    for sample in dataset.samples:
        rel, number = sample.locator
        by_shard.setdefault(rel, {})[number] = sample
    payload: dict[str, set[int]] = dataset.options["payload"]
    out: dict[str, Path] = {}
    for n, rel in enumerate(dataset.all_annotation_files()):
        target = staging / f"shard-{n}.tar"
        _write_shard(rel, base / rel, target, by_shard.get(rel, {}), payload.get(rel, set()), updates, dataset)
        out[rel] = target
    return out


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write, embedded=True,
                       claims_archive=claims_archive)

