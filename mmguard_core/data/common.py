"""Helpers the format modules share: finding annotation files, reading them as UTF-8 text under the
size cap, finding the folder an annotation's image paths are relative to."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .archive import JUNK_DIRS, JUNK_FILES, IngestLimits
from .errors import DatasetError, Problem

BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 64 * 1024


def sub_folders(folder: Path) -> list[Path]:
    """Real (not linked) sub-folders, sorted, junk (__MACOSX) left out."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in JUNK_DIRS)
    except OSError:
        return []


def files_in(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)
                      and p.name not in JUNK_FILES and not p.name.startswith("._"))
    except OSError:
        return []


def find_files(container: Path, suffixes: tuple[str, ...], accept: Callable[[Path], bool], depth: int = 1) -> list[str]:
    """Files (relative, '/'-separated) ending in one of `suffixes` that `accept`, at the top of the
    upload and down to `depth` folders below it, sorted."""
    found: list[str] = []
    level = [container]
    for _ in range(depth + 1):
        next_level: list[Path] = []
        for folder in level:
            for path in files_in(folder, suffixes):
                try:
                    ok = accept(path)
                except OSError:
                    ok = False
                if ok:
                    found.append(path.relative_to(container).as_posix())
            next_level.extend(sub_folders(folder))
        level = next_level
    return sorted(found)


def read_head(path: Path, size: int = SNIFF_BYTES) -> str:
    """The first bytes of a file as text (BOM and leading whitespace dropped; undecodable bytes replaced)."""
    with open(path, "rb") as fh:
        data = fh.read(size)
    if data.startswith(BOM):
        data = data[len(BOM):]
    return data.decode("utf-8", "replace").lstrip()


def check_size(path: Path, file: str, limits: IngestLimits) -> int:
    size = path.stat().st_size
    if size > limits.max_annotation_bytes:
        raise DatasetError(Problem(
            file, None, f"annotation file is {size} bytes, over the limit of {limits.max_annotation_bytes} (max_annotation_bytes)"))
    return size


def read_text(path: Path, file: str, limits: IngestLimits) -> tuple[str, bool]:
    """(the file as text, whether it began with a UTF-8 BOM); DatasetError naming the line of the
    first byte that is not UTF-8, or when the file is over max_annotation_bytes."""
    check_size(path, file, limits)
    data = path.read_bytes()
    bom = data.startswith(BOM)
    if bom:
        data = data[len(BOM):]
    try:
        return data.decode("utf-8"), bom
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DatasetError(Problem(
            file, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8")) from None


def encode_text(text: str, bom: bool) -> bytes:
    return (BOM if bom else b"") + text.encode("utf-8")


def one_file(found: list[str], what: str) -> str | None:
    """The single candidate, None for none; DatasetError listing them when there are several."""
    if len(found) > 1:
        raise DatasetError(Problem("", None, f"more than one {what}: {', '.join(found[:10])}; keep exactly one"))
    return found[0] if found else None


def parent_of(rel: str) -> str:
    parent = PurePosixPath(rel).parent.as_posix()
    return "" if parent == "." else parent


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def common_folder(a: str, b: str) -> str:
    """The deepest folder holding both relative folders a and b ('' = the top)."""
    pa, pb = [p for p in a.split("/") if p], [p for p in b.split("/") if p]
    out = []
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        out.append(x)
    return "/".join(out)


def find_image_base(container: Path, annotation_dir: str, refs: Iterable[str], sample_size: int = 50) -> str:
    """The folder (relative to the upload's top) that image references are relative to: the
    annotation's folder, the top, or a folder beside or inside either (LLaVA's image folder, COCO's
    train2017/), whichever holds most of the first `sample_size` referenced files. Ties go to the
    annotation's folder, then the top; none found -> the annotation's folder (missing files are
    then reported against it)."""
    sample = [r for _, r in zip(range(sample_size), refs, strict=False)]
    candidates: list[str] = [annotation_dir, ""]
    for base in (annotation_dir, parent_of(annotation_dir) if annotation_dir else "", ""):
        for sub in sub_folders(container / base if base else container):
            candidates.append(sub.relative_to(container).as_posix())
    seen: set[str] = set()
    best, best_score = annotation_dir, 0
    for candidate in candidates:
        if candidate in seen:
            continue
        seen.add(candidate)
        folder = container / candidate if candidate else container
        score = sum(1 for r in sample if os.path.lexists(folder / r))
        if score > best_score:
            best, best_score = candidate, score
    return best


def strip_base(path: str, base: str) -> str:
    """A path relative to the dataset root made relative to `base` (the image folder) again."""
    if base and path.startswith(base + "/"):
        return path[len(base) + 1:]
    return path


def new_reference(raw: Any, old_ref: str, new_ref: str) -> str:
    """Keep the annotation's own spelling ('./', backslashes) when only the file name changes."""
    old, new = PurePosixPath(old_ref), PurePosixPath(new_ref)
    if isinstance(raw, str) and old.parent == new.parent and raw.endswith(old.name):
        return raw[: len(raw) - len(old.name)] + new.name
    return new_ref


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
