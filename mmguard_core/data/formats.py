"""Format registry and the top-level load / validate / write functions.

A format is one module holding a `FORMAT = DatasetFormat(...)`:
  detect(container) -> Detection | None   finds its annotation file(s) in an extracted upload
                                          (raises DatasetError when ambiguous);
  read(container, detection, limits)   -> (Dataset, problems): the structurally valid samples
                                          plus one Problem per bad record (never raises for a
                                          bad record; raises DatasetError for a file-level fault);
  write(dataset, updates)              -> {path relative to dataset.root: new bytes} for the
                                          annotation file(s), applying SampleUpdate per sample
                                          and keeping every other record and field as it was.
Formats that keep the images inside their own files (WebDataset shards, parquet) set
`embedded=True`: their read gets a private `scratch` folder to copy the images out to (it becomes
dataset.root), their write gets a `staging` folder and returns {path relative to the upload's
top: bytes or a Path of a file written in staging}, and each protected image reaches it as a
PNG file (SampleUpdate.image_file).
Everything else - archives, image checks, the PNG re-encoding and renaming of images,
copying untouched files, folder/zip/tar output - is shared and lives here.
The built-in formats are listed in BUILTIN_FORMATS (docs/formats.md describes each); add a
module and list it there, or call register_format.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .archive import (
    DEFAULT_LIMITS,
    IngestLimits,
    _check_archive_size,
    archive_kind,
    extract_archive,
    is_inside,
    iter_tree,
    open_sink,
    output_kind,
)
from .errors import DatasetError, Problem
from .images import ImageReadError, encode_png, probe_image
from .sample import Dataset, ProtectedSample, Sample

BUILTIN_FORMATS = (
    "mmguard_core.data.jsonl",
    "mmguard_core.data.csvfmt",
    "mmguard_core.data.llava",
    "mmguard_core.data.coco",
    "mmguard_core.data.webdataset",
    "mmguard_core.data.parquet",
)

# the names `fields=` may set (load_dataset / validate_dataset); each format documents its defaults
FIELD_ROLES = ("image", "question", "answer", "caption")


@dataclass(frozen=True)
class Detection:
    """Where a format found its annotation: `annotation` is relative to the upload's top
    ('/'-separated); the dataset root is its folder. `files` lists every annotation file of a
    format that has several (shards, parquet parts), `annotation` being the first. `fields` holds
    the field/column names the caller chose (see FIELD_ROLES)."""

    format: str
    annotation: str
    files: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def root(self) -> str:
        parent = PurePosixPath(self.annotation).parent.as_posix()
        return "" if parent == "." else parent

    def field(self, role: str, default: str | None = None) -> str | None:
        """The caller's name for `role` ("image", "question", "answer", "caption"), else `default`."""
        return dict(self.fields).get(role, default)

    def all_files(self) -> tuple[str, ...]:
        return self.files or (self.annotation,)


@dataclass(frozen=True)
class SampleUpdate:
    """What changes in one sample's annotation; None = unchanged. `image_path` is relative to
    dataset.root ('/'-separated). `image_file` (embedded formats only) is the protected image as a
    PNG file to store in place of the sample's image."""

    image_path: str | None = None
    question: str | None = None
    answer: str | None = None
    image_file: Path | None = None


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    description: str  # what detect looks for, shown when no format matches
    detect: Callable[[Path], Detection | None]
    read: Callable[..., tuple[Dataset, list[Problem]]]  # (container, detection, limits[, scratch])
    write: Callable[..., dict[str, Any]]  # (dataset, updates[, staging])
    # images live inside the format's own files: read(..., scratch), write(..., staging), see above
    embedded: bool = False
    # samples that share one image file (COCO: one sample per caption) share ONE protected image: the
    # first protected sample's pixels are written for all of them (else each distinct perturbation
    # gets its own file, as for JSONL)
    one_image_per_file: bool = False
    # format=NAME given: a looser detect (e.g. any one *.csv), None = detect
    detect_explicit: Callable[[Path], Detection | None] | None = None
    # this archive file is itself one dataset of the format (a bare WebDataset shard), not a container
    claims_archive: Callable[[Path], bool] | None = None


FORMATS: dict[str, DatasetFormat] = {}
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module_name in BUILTIN_FORMATS:
        fmt = importlib.import_module(module_name).FORMAT
        FORMATS.setdefault(fmt.name, fmt)


def register_format(fmt: DatasetFormat, *, replace: bool = False) -> None:
    _ensure_builtins()
    if fmt.name in FORMATS and not replace:
        raise ValueError(f"format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt


def get_format(name: str) -> DatasetFormat:
    _ensure_builtins()
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dataset format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def available_formats() -> list[str]:
    _ensure_builtins()
    return sorted(FORMATS)


def detect_format(folder: str | os.PathLike[str], *, format: str | None = None, label: str | None = None) -> Detection:
    """Which format (and annotation file) an extracted upload or dataset folder holds.
    Raises DatasetError when none or more than one format matches."""
    root = Path(folder)
    label = label or root.name
    if format is not None:
        fmt = get_format(format)
        found = _detect_one(fmt, root, label, explicit=True)
        if found is None:
            raise DatasetError(Problem(label, None, f"no {fmt.name} dataset found: expected {fmt.description}"))
        return found
    _ensure_builtins()
    matches = [d for d in (_detect_one(fmt, root, label) for fmt in FORMATS.values()) if d is not None]
    if not matches:
        wanted = "; or ".join(fmt.description for fmt in FORMATS.values())
        raise DatasetError(Problem(label, None, f"no annotation file found: expected {wanted}{_found_hint(root)}"))
    if len(matches) > 1:
        found = ", ".join(f"{d.format} ({d.annotation})" for d in matches)
        raise DatasetError(Problem(label, None, f"more than one dataset format matches: {found}; choose one with format="))
    return matches[0]


def _found_hint(root: Path) -> str:
    """' (found: a.jsonl, x/b.json)' - annotation-like files at the top or one level down, as a hint."""
    found: list[str] = []
    try:
        for pattern in ("*.jsonl", "*.json", "*.csv", "*.parquet", "*.tar",
                        "*/*.jsonl", "*/*.json", "*/*.csv", "*/*.parquet", "*/*.tar"):
            found.extend(p.relative_to(root).as_posix() for p in sorted(root.glob(pattern)) if p.is_file())
            if len(found) >= 5:
                break
    except OSError:
        return ""
    return f" (found: {', '.join(found[:5])})" if found else ""


def _detect_one(fmt: DatasetFormat, root: Path, label: str, explicit: bool = False) -> Detection | None:
    detect = fmt.detect_explicit if explicit and fmt.detect_explicit is not None else fmt.detect
    try:
        return detect(root)
    except DatasetError as exc:  # name the upload in file-less problems
        problems = [p if p.file else Problem(label, p.line, p.message) for p in exc.problems]
        raise DatasetError(problems, summary=exc.summary) from None


# the limits of common file systems (NAME_MAX, PATH_MAX): a longer "path" names no file
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def normalize_image_path(value: Any, field_name: str) -> str | tuple[str]:
    """An annotation's image reference -> normalised relative path, or (reason,) when refused."""
    if not isinstance(value, str):
        return (f"field {field_name!r} must be a string (a relative image path), got {_type_name(value)}",)
    text = value.strip().replace("\\", "/")
    if not text:
        return (f"field {field_name!r} is empty",)
    if any(ord(ch) < 32 for ch in text) or _has_surrogate(text):
        # no file system names such a file (and realpath() raises on NUL or a lone surrogate)
        return (f"field {field_name!r}: {value!r} contains a control character or an invalid code point",)
    if "://" in text or text.startswith("data:"):
        return (f"field {field_name!r}: {value!r} is a URL; images must be files inside the upload",)
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return (f"field {field_name!r}: absolute path {value!r} not allowed; use a path relative to the annotation file",)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return (f"field {field_name!r}: path {value!r} contains '..'",)
    if not parts:
        return (f"field {field_name!r} is empty",)
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts) or len(text.encode("utf-8")) > MAX_PATH_BYTES:
        # no file system names such a file; most often image bytes (base64) or a caption in the wrong column
        return (f"field {field_name!r}: {_clip(value)} is too long for a file path (is it inline image data "
                "or text? images must be files inside the upload, named by a relative path)",)
    return "/".join(parts)


def _has_surrogate(text: str) -> bool:
    """A lone surrogate code point: JSON escapes can spell one, no UTF-8 encodes it."""
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _clip(value: str, limit: int = 60) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- loading

# image files nobody references are listed as warnings (they are copied to the output unprotected)
UNREFERENCED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_LISTED_WARNINGS = 1000


@dataclass
class ValidationReport:
    """What validate_dataset found. `ok` is True when there is no problem at all; `warnings` do not
    count (e.g. image files no sample uses, which are copied to the output unprotected)."""

    ok: bool
    path: str
    format: str | None = None
    kind: str | None = None  # "vqa" or "caption"
    num_samples: int = 0  # usable samples (after dropping bad ones)
    num_bad_samples: int = 0
    num_images: int = 0  # distinct image files used by the usable samples
    annotation_file: str | None = None  # relative to the upload's top (the first one, for several)
    image_field: str | None = None
    question_field: str | None = None
    answer_field: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    annotation_files: list[str] = field(default_factory=list)  # every annotation file (shards, parts)

    @property
    def layout(self) -> str | None:
        """Same as `format` (the reader/writer name, e.g. "jsonl")."""
        return self.format

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "path": self.path, "format": self.format, "kind": self.kind,
            "num_samples": self.num_samples, "num_bad_samples": self.num_bad_samples,
            "num_images": self.num_images, "annotation_file": self.annotation_file,
            "annotation_files": list(self.annotation_files),
            "image_field": self.image_field, "question_field": self.question_field,
            "answer_field": self.answer_field, "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
        }

    def __str__(self) -> str:
        head = (f"{self.path}: {self.num_samples} {self.kind or ''} samples ({self.format}, {self.annotation_file})"
                if self.format else f"{self.path}: not loadable")
        if self.ok:
            tail = f", {len(self.warnings)} warning(s)" if self.warnings else ""
            return head + ", no problems" + tail
        return str(DatasetError(self.problems, summary=f"{head}, {len(self.problems)} problem(s)"))


def _remove_trees_if_owner(paths: Sequence[str], pid: int) -> None:
    # a forked child (e.g. a DataLoader worker) must never delete its parent's extraction
    if os.getpid() == pid:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def _remove_tree_if_owner(path: str, pid: int) -> None:
    _remove_trees_if_owner([path], pid)


@dataclass
class _Source:
    container: Path  # the upload's top: the input folder, or a private folder
    temp: Path | None  # private folder to remove (extraction, or the one holding a bare archive link)
    bare: str | None = None  # the input archive is itself the dataset (its name inside container)


def _claiming_formats(format: str | None) -> list[DatasetFormat]:
    _ensure_builtins()
    formats = [get_format(format)] if format is not None else list(FORMATS.values())
    return [f for f in formats if f.claims_archive is not None]


def _open_source(path: Path, work_dir: Any, limits: IngestLimits, format: str | None = None) -> _Source:
    label = path.name or str(path)
    if path.is_dir():
        return _Source(path, None)
    if not path.exists():
        raise DatasetError(Problem(label, None, "does not exist"))
    if archive_kind(path) is None:
        raise DatasetError(Problem(label, None, "not a folder, a .zip or a .tar archive"))
    for fmt in _claiming_formats(format):
        try:
            claimed = fmt.claims_archive(path)  # type: ignore[misc]
        except (OSError, EOFError, tarfile.TarError, ValueError):
            claimed = False
        if claimed:
            _check_archive_size(path, limits, label)
            if work_dir is not None:
                Path(work_dir).mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix="mmguard-extract-", dir=work_dir))
            os.symlink(os.path.abspath(path), temp / label)
            return _Source(temp, temp, bare=label)
    temp = extract_archive(path, work_dir=work_dir, limits=limits, label=label)
    return _Source(temp, temp)


def _check_images(
    dataset: Dataset, container: Path, limits: IngestLimits, decode: bool, confine: bool
) -> tuple[set[int], list[Problem]]:
    """(positions of samples whose image is unusable, one Problem per such sample). With `confine`
    (extracted archives) an image must resolve inside the container; a user's own folder may
    link its images in from elsewhere. Images a format copied out of its own files (scratch_dir)
    must resolve inside that folder."""
    annotation = _annotation_rel(dataset, container, dataset.annotation_file)
    confine_root = dataset.scratch_dir if dataset.scratch_dir is not None else container if confine else None
    groups: dict[str, list[int]] = {}
    for position, sample in enumerate(dataset.samples):
        groups.setdefault(sample.image_path, []).append(position)
    bad: set[int] = set()
    problems: list[Problem] = []
    for rel, positions in groups.items():
        file = dataset.root / rel
        try:
            message = _image_problem(file, rel, confine_root, limits, decode)
        except OSError as exc:  # a name the file system refuses, a permission, a loop of links
            message = f"image {rel!r}: cannot read: {exc.strerror or exc}"
        if message is not None:
            bad.update(positions)
            for i in positions:
                sample = dataset.samples[i]
                problems.append(Problem(sample.source or annotation, sample.line or None, message))
    return bad, problems


def _check_texts(dataset: Dataset, container: Path) -> tuple[set[int], list[Problem]]:
    """(positions of samples whose question or answer holds a lone surrogate, one Problem each). JSON
    escapes can spell one (half of an emoji cut off: "\\ud83d"); no UTF-8 encodes it, so the writer and
    the tokenizer would fail on it long after the upload was accepted."""
    bad: set[int] = set()
    problems: list[Problem] = []
    annotation = _annotation_rel(dataset, container, dataset.annotation_file)
    for position, sample in enumerate(dataset.samples):
        for field_name, text in ((dataset.question_field, sample.question), (dataset.answer_field, sample.answer)):
            if text is not None and _has_surrogate(text):
                bad.add(position)
                problems.append(Problem(sample.source or annotation, sample.line or None,
                                        f"field {field_name!r} contains an invalid code point (a lone surrogate, "
                                        "e.g. half of an escaped emoji)"))
                break
    return bad, problems


def _image_problem(
    file: Path, rel: str, confine_root: Path | None, limits: IngestLimits, decode: bool
) -> str | None:
    """Why the image at `file` is unusable, or None when it is fine; with a `confine_root` it must
    resolve inside that folder."""
    if confine_root is not None and not is_inside(file, confine_root):
        return f"image {rel!r} points outside the dataset folder"
    if not file.exists():
        return f"image {rel!r} not found" + _did_you_mean(file)
    if not file.is_file():
        return f"image {rel!r} is not a file"
    try:
        probe_image(file, max_pixels=limits.max_image_pixels, decode=decode)
    except ImageReadError as exc:
        return f"image {rel!r}: {exc}"
    return None


def _scan_tree(dataset: Dataset, container: Path) -> list[Problem]:
    """Walk the upload once: a DatasetError when two file names differ only in case (they would
    collide in a zip or on a case-insensitive disk), else the warnings - image files that no sample
    (good or bad) uses, copied to the output as they are, so unprotected (formats that keep images
    inside their own files have none)."""
    used = {_container_rel(dataset, container, s.image_path) for s in dataset.samples}
    annotation = _annotation_rel(dataset, container, dataset.annotation_file)
    check_unused = dataset.scratch_dir is None
    found: list[Problem] = []
    seen: dict[str, str] = {}
    clashes: list[Problem] = []
    extra = 0
    try:
        for _, rel in iter_tree(container):
            folded = rel.casefold()
            if folded in seen and len(clashes) < MAX_LISTED_WARNINGS:
                clashes.append(Problem(rel, None, f"differs from {seen[folded]!r} only in upper/lower case; rename one "
                                                  "(the two would collide in the output)"))
            seen.setdefault(folded, rel)
            if not check_unused or not rel.lower().endswith(UNREFERENCED_EXTENSIONS) or rel in used:
                continue
            if len(found) < MAX_LISTED_WARNINGS:
                found.append(Problem(rel, None, f"image file not used by any sample of {annotation}: "
                                                "it is copied to the output unprotected"))
            else:
                extra += 1
    except OSError:
        return found
    if clashes:
        raise DatasetError(clashes, summary=None if len(clashes) == 1 else f"{len(clashes)} file names clash")
    if extra:
        found.append(Problem("", None, f"... and {extra} more image file(s) not used by any sample"))
    return found


def _did_you_mean(file: Path) -> str:
    try:
        names = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
    except OSError:
        return ""
    wanted = file.name.casefold()
    close = [n for n in names if n.casefold() == wanted]
    return f" (did you mean {close[0]!r}? names are case-sensitive)" if close else ""


def _annotation_rel(dataset: Dataset, container: Path, rel: str) -> str:
    """An annotation file's name relative to the upload's top."""
    return _container_rel(dataset, container, rel, dataset.annotation_base)


def _container_rel(dataset: Dataset, container: Path, rel: str, base: Path | None = None) -> str:
    """A path relative to dataset.root (or to `base`), made relative to the upload's top."""
    base = dataset.root if base is None else base
    try:
        prefix = base.relative_to(container).as_posix()
    except ValueError:
        prefix = ""
    return rel if prefix in ("", ".") else f"{prefix}/{rel}"


def _sort_key(p: Problem) -> tuple[str, int]:
    return (p.file, p.line or 0)


def _check_fields(fields: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if not fields:
        return ()
    out = []
    for role, name in fields.items():
        if role not in FIELD_ROLES:
            raise ValueError(f"fields: unknown role {role!r}; known: {', '.join(FIELD_ROLES)}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"fields[{role!r}] must be a non-empty string")
        out.append((role, name))
    return tuple(out)


def _read(
    source: _Source,
    label: str,
    limits: IngestLimits,
    format: str | None,
    decode: bool,
    fields: tuple[tuple[str, str], ...] = (),
    work_dir: Any = None,
) -> tuple[Dataset, list[Problem], int]:
    """Detect, read, check images. Returns the dataset holding only usable samples (re-indexed),
    every problem found and how many records were dropped (a reader reports one problem per bad
    record). Raises DatasetError only for file-level faults. An embedded format's
    scratch folder is dataset.scratch_dir (removed here when reading fails)."""
    container = source.container
    detection = detect_format(container, format=format, label=label)
    if fields:
        detection = dataclasses.replace(detection, fields=fields)
    fmt = get_format(detection.format)
    scratch: Path | None = None
    try:
        if fmt.embedded:
            if work_dir is not None:
                Path(work_dir).mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="mmguard-images-", dir=work_dir))
            dataset, problems = fmt.read(container, detection, limits, scratch)
            dataset.root = scratch
            dataset.scratch_dir = scratch
        else:
            dataset, problems = fmt.read(container, detection, limits)
    except OSError as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise DatasetError(Problem(detection.annotation, None, f"cannot read: {exc.strerror or exc}")) from exc
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    dataset.source_root = container
    dataset.bare_archive = source.bare
    bad, image_problems = _check_images(dataset, container, limits, decode, source.temp is not None)
    bad_text, text_problems = _check_texts(dataset, container)
    bad |= bad_text
    n_bad = len(problems) + len(bad)
    problems = sorted([*problems, *image_problems, *text_problems], key=_sort_key)
    try:
        dataset.warnings = _scan_tree(dataset, container)
    except DatasetError:
        if dataset.scratch_dir is not None:
            shutil.rmtree(dataset.scratch_dir, ignore_errors=True)
        raise
    dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in bad]
    for index, sample in enumerate(dataset.samples):
        sample.index = index
    return dataset, problems, n_bad


def load_dataset(
    path: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    skip_bad: bool = False,
    format: str | None = None,
    decode_images: bool = True,
    fields: Mapping[str, str] | None = None,
) -> Dataset:
    """Load a dataset folder, .zip or .tar(.gz). Archives are extracted safely into a private
    folder under `work_dir` (system temp when None) that lives until `dataset.close()`.

    `format` names the format instead of detecting it (available_formats()); `fields` renames the
    fields/columns a format reads, e.g. {"image": "img", "caption": "text"} (roles: FIELD_ROLES).
    Raises DatasetError listing every problem (file + line) unless `skip_bad`, in which case
    bad samples are dropped and listed in `dataset.problems` (an error still when none is left).
    `decode_images=False` checks image headers only (faster; truncation is then not caught)."""
    source_path = Path(path)
    label = source_path.name or str(source_path)
    chosen = _check_fields(fields)
    if format is not None:
        get_format(format)
    source = _open_source(source_path, work_dir, limits, format)
    temps = [source.temp] if source.temp is not None else []
    try:
        dataset, problems, n_bad = _read(source, label, limits, format, decode_images, chosen, work_dir)
        if dataset.scratch_dir is not None:
            temps.append(dataset.scratch_dir)
        if not dataset.samples:
            raise DatasetError(problems, summary=f"{label}: no usable samples ({n_bad} bad)")
        if problems and not skip_bad:
            raise DatasetError(problems, summary=f"{label}: {len(problems)} problem(s)" if len(problems) > 1 else None)
    except BaseException:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    dataset.problems = problems
    dataset.source_path = source_path
    dataset.temp_dir = source.temp
    if temps:
        dataset.cleanup = weakref.finalize(dataset, _remove_trees_if_owner, [str(t) for t in temps], os.getpid())
    return dataset


def validate_dataset(
    path: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    format: str | None = None,
    decode_images: bool = True,
    fields: Mapping[str, str] | None = None,
) -> ValidationReport:
    """Check an upload without keeping anything: never raises DatasetError, the report lists
    every problem (file + line). Extracted files are removed before returning."""
    source_path = Path(path)
    label = source_path.name or str(source_path)
    report = ValidationReport(ok=False, path=label)
    chosen = _check_fields(fields)
    if format is not None:
        get_format(format)
    temps: list[Path] = []
    try:
        source = _open_source(source_path, work_dir, limits, format)
        if source.temp is not None:
            temps.append(source.temp)
        dataset, problems, n_bad = _read(source, label, limits, format, decode_images, chosen, work_dir)
        if dataset.scratch_dir is not None:
            temps.append(dataset.scratch_dir)
        container = source.container
        report.annotation_file = _annotation_rel(dataset, container, dataset.annotation_file)
        report.annotation_files = [_annotation_rel(dataset, container, rel) for rel in dataset.all_annotation_files()]
    except DatasetError as exc:
        report.problems = list(exc.problems)
        return report
    finally:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    report.format = dataset.layout
    report.kind = dataset.kind if dataset.samples else None
    report.num_samples = len(dataset.samples)
    report.num_bad_samples = n_bad
    report.num_images = len({s.image_path for s in dataset.samples})
    report.image_field = dataset.image_field
    report.question_field = dataset.question_field if dataset.kind == "vqa" else None
    report.answer_field = dataset.answer_field
    report.problems = problems
    report.warnings = list(dataset.warnings)
    if not dataset.samples and not problems:
        problems.append(Problem(report.annotation_file or "", None, "no samples"))
    report.ok = not problems
    return report


# ---------------------------------------------------------------- writing


def _check_protected(dataset: Dataset, protected: Sequence[ProtectedSample]) -> dict[int, ProtectedSample]:
    by_index: dict[int, ProtectedSample] = {}
    for item in protected:
        if not isinstance(item.index, int | np.integer) or not 0 <= int(item.index) < len(dataset.samples):
            raise ValueError(f"ProtectedSample.index {item.index!r} is not a sample of this dataset (0..{len(dataset.samples) - 1})")
        index = int(item.index)
        if index in by_index:
            raise ValueError(f"two ProtectedSample entries for sample {index}")
        image = np.asarray(item.image)
        if image.dtype != np.uint8:
            raise ValueError(f"sample {index}: image must be uint8 (use quantize_with_bound), got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or 0 in image.shape:
            raise ValueError(f"sample {index}: image must be (H, W, 3) or (H, W, 4), got shape {image.shape}")
        if not isinstance(item.answer, str):
            raise ValueError(f"sample {index}: answer must be a string")
        if item.question is not None and not isinstance(item.question, str):
            raise ValueError(f"sample {index}: question must be a string or None")
        by_index[index] = item
    return by_index


def _png_names(path: str, variant: int | None) -> Any:
    p = PurePosixPath(path)
    parent = "" if p.parent.as_posix() == "." else p.parent.as_posix() + "/"
    stem, tag = p.stem, p.suffix.lstrip(".").lower()
    if variant is None:
        yield f"{parent}{stem}.png"
        if tag and tag != "png":
            yield f"{parent}{stem}_{tag}.png"
        base = f"{parent}{stem}_{tag or 'image'}"
    else:
        base = f"{parent}{stem}_{variant}"
        yield f"{base}.png"
    for n in itertools.count(2):
        yield f"{base}_{n}.png"


def _join(prefix: str, rel: str) -> str:
    return rel if not prefix else f"{prefix}/{rel}"


def _distinct_images(
    samples: list[Sample], by_index: Mapping[int, ProtectedSample], one_per_file: bool
) -> list[tuple[np.ndarray, list[Sample]]]:
    """The protected images to write for one source image file, each with the samples that use it.
    `one_per_file`: one image, the first protected sample's, for every sample of the file."""
    protected = sorted((s for s in samples if s.index in by_index), key=lambda s: s.index)
    if one_per_file:
        return [(np.asarray(by_index[protected[0].index].image), sorted(samples, key=lambda s: s.index))]
    distinct: list[tuple[np.ndarray, list[Sample]]] = []
    for sample in protected:
        image = np.asarray(by_index[sample.index].image)
        for array, members in distinct:
            if array.shape == image.shape and np.array_equal(array, image):
                members.append(sample)
                break
        else:
            distinct.append((image, [sample]))
    return distinct


def write_protected(
    dataset: Dataset,
    protected: Sequence[ProtectedSample],
    output_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    compress_level: int = 6,
) -> Path:
    """Write the protected dataset with the input's format and file names.

    `output_path` ending in .zip writes a zip, .tar/.tar.gz/.tgz (.tar.bz2, .tar.xz) a tar,
    anything else a folder. Protected images are saved as PNG (lossless): a .jpg/.webp becomes
    .png in the same folder and the annotation is updated; on a name clash, or when samples
    sharing one image file got different perturbations, a suffix is added (cat_jpg.png,
    cat_17.png) - except for formats with one image per file (COCO), where the first protected
    sample's image is written once for every sample of that file. An original image file is left
    out once every sample using it is protected. Formats that keep images inside their own files
    (WebDataset shards, parquet) get the PNGs stored inside the rewritten files. A dataset read from
    one bare WebDataset shard written to a .tar path gives that shard itself.
    Annotation texts get the trigger (question, or caption for caption-prefix placement);
    every other field, line and file is copied unchanged. Output is built beside the target
    and moved into place at the end, so a failure leaves no half-written output.
    Returns the output path.
    """
    out = Path(output_path)
    source_root = dataset.source_root or dataset.root
    base = dataset.annotation_base
    if not dataset.root.is_dir() or not all((base / rel).is_file() for rel in dataset.all_annotation_files()):
        raise ValueError(f"the dataset's files are gone ({dataset.root}); write before dataset.close()")
    if is_inside(out, source_root) or is_inside(source_root, out):
        raise ValueError(f"output {out} must not be inside the input {source_root} (nor contain it)")
    if dataset.source_path is not None and dataset.bare_archive is not None and is_inside(out, dataset.source_path):
        raise ValueError(f"output {out} must not be the input {dataset.source_path}")
    fmt = get_format(dataset.layout)
    embedded = fmt.embedded and dataset.scratch_dir is not None
    by_index = _check_protected(dataset, protected)
    if embedded:
        prefix = ""
    else:
        try:
            prefix = dataset.root.relative_to(source_root).as_posix()
        except ValueError:
            prefix = ""
        prefix = "" if prefix == "." else prefix
    annotation_prefix = "" if embedded else prefix

    groups: dict[str, list[Sample]] = {}
    for sample in dataset.samples:
        groups.setdefault(sample.image_path, []).append(sample)
    touched = {path for path, members in groups.items() if any(s.index in by_index for s in members)}
    unprotected_paths = {s.image_path for s in dataset.samples if s.index not in by_index}
    if fmt.one_image_per_file:
        unprotected_paths -= touched  # the file's one protected image serves all its samples

    annotation_names = {_join(annotation_prefix, rel) for rel in dataset.all_annotation_files()}
    if embedded:
        replaced: set[str] = set()
        kept = [(file, rel) for file, rel in iter_tree(source_root) if rel not in annotation_names]
        taken = {name.casefold() for name in dataset.reserved_names} | {p.casefold() for p in groups}
    else:
        replaced = {_join(prefix, path) for path in touched if path not in unprotected_paths}
        kept = [(file, rel) for file, rel in iter_tree(source_root) if rel not in annotation_names and rel not in replaced]
        taken = {rel.casefold() for _, rel in kept} | {name.casefold() for name in annotation_names}

    staging: Path | None = None
    if embedded:
        assert dataset.scratch_dir is not None
        staging = Path(tempfile.mkdtemp(prefix="mmguard-write-", dir=dataset.scratch_dir.parent))
    try:
        updates: dict[int, SampleUpdate] = {}
        new_images: list[tuple[str, np.ndarray]] = []
        # images already .png keep their names first, then the others, in a fixed order
        for path in sorted(touched, key=lambda p: (not p.lower().endswith(".png"), p)):
            for k, (array, members) in enumerate(_distinct_images(groups[path], by_index, fmt.one_image_per_file)):
                for name in _png_names(path, None if k == 0 else members[0].index):
                    if (embedded and name == path) or _join(prefix, name).casefold() not in taken:
                        break
                taken.add(_join(prefix, name).casefold())
                image_file = None
                if staging is not None:
                    image_file = staging / f"image-{len(new_images)}.png"
                    image_file.write_bytes(encode_png(array, compress_level=compress_level))
                new_images.append((_join(prefix, name), array))
                for sample in members:
                    item = by_index.get(sample.index)
                    question = answer = None
                    if item is not None:
                        question = item.question if item.question is not None and item.question != sample.question else None
                        answer = item.answer if item.answer != sample.answer else None
                    update = SampleUpdate(image_path=None if name == path else name, question=question,
                                          answer=answer, image_file=image_file)
                    if update != SampleUpdate():
                        updates[sample.index] = update

        annotations = fmt.write(dataset, updates, staging) if embedded else fmt.write(dataset, updates)
        if embedded and dataset.bare_archive is not None and output_kind(out) != "folder" and output_kind(out) != "zip":
            produced = annotations.get(dataset.bare_archive)
            if produced is not None and len(annotations) == 1 and not kept:
                return _write_bare_archive(produced, out, overwrite, staging)
        sink = open_sink(out, overwrite=overwrite)
        try:
            extra = {_join(annotation_prefix, rel) for rel in annotations}
            for file, rel in kept:
                if rel not in extra:
                    sink.add_file(file, rel)
            for rel, data in annotations.items():
                if isinstance(data, Path):
                    sink.add_file(data, _join(annotation_prefix, rel))
                else:
                    sink.add_bytes(data, _join(annotation_prefix, rel))
            if not embedded:
                for rel, array in new_images:
                    sink.add_bytes(encode_png(array, compress_level=compress_level), rel)
            return sink.commit()
        except BaseException:
            sink.abort()
            raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _write_bare_archive(produced: bytes | Path, out: Path, overwrite: bool, staging: Path | None) -> Path:
    """One rewritten shard is the whole output: store it at `out` (recompressed as out's name says)."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        source = produced
        if not isinstance(source, Path):
            assert staging is not None
            source = staging / "bare.tar"
            source.write_bytes(produced)  # type: ignore[arg-type]
        compression = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}[output_kind(out)]
        with open(source, "rb") as fh:
            magic = fh.read(6)
        source_compressed = magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))
        if not compression and not source_compressed:
            shutil.copyfile(source, tmp)
        else:
            with tarfile.open(source, "r:*") as src, tarfile.open(tmp, f"w:{compression}" if compression else "w",
                                                                  format=tarfile.PAX_FORMAT) as dst:  # type: ignore[call-overload]
                for member in src:
                    data = src.extractfile(member) if member.isreg() else None
                    dst.addfile(member, data)
        os.chmod(tmp, 0o644)
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return out
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
