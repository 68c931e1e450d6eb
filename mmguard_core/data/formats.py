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
Everything else - archives, image checks, the PNG re-encoding and renaming of images,
copying untouched files, folder/zip/tar output - is shared and lives here.
Only "jsonl" exists so far (see jsonl.py); add a module and list it in BUILTIN_FORMATS.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .archive import DEFAULT_LIMITS, IngestLimits, archive_kind, extract_archive, iter_tree, open_sink
from .errors import DatasetError, Problem
from .images import ImageReadError, encode_png, probe_image
from .sample import Dataset, ProtectedSample, Sample

BUILTIN_FORMATS = ("mmguard_core.data.jsonl",)


@dataclass(frozen=True)
class Detection:
    """Where a format found its annotation: `annotation` is relative to the upload's top
    ('/'-separated); the dataset root is its folder."""

    format: str
    annotation: str

    @property
    def root(self) -> str:
        parent = PurePosixPath(self.annotation).parent.as_posix()
        return "" if parent == "." else parent


@dataclass(frozen=True)
class SampleUpdate:
    """What changes in one sample's annotation; None = unchanged. `image_path` is relative to
    dataset.root ('/'-separated)."""

    image_path: str | None = None
    question: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    description: str  # what detect looks for, shown when no format matches
    detect: Callable[[Path], Detection | None]
    read: Callable[[Path, Detection, IngestLimits], tuple[Dataset, list[Problem]]]
    write: Callable[[Dataset, Mapping[int, SampleUpdate]], dict[str, bytes]]


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
        found = _detect_one(fmt, root, label)
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
    """' (found: a.jsonl, x/b.json)' - JSON-ish files at the top or one level down, as a hint."""
    found: list[str] = []
    try:
        for pattern in ("*.jsonl", "*.json", "*/*.jsonl", "*/*.json"):
            found.extend(p.relative_to(root).as_posix() for p in sorted(root.glob(pattern)) if p.is_file())
            if len(found) >= 5:
                break
    except OSError:
        return ""
    return f" (found: {', '.join(found[:5])})" if found else ""


def _detect_one(fmt: DatasetFormat, root: Path, label: str) -> Detection | None:
    try:
        return fmt.detect(root)
    except DatasetError as exc:  # name the upload in file-less problems
        problems = [p if p.file else Problem(label, p.line, p.message) for p in exc.problems]
        raise DatasetError(problems, summary=exc.summary) from None


def normalize_image_path(value: Any, field_name: str) -> str | tuple[str]:
    """An annotation's image reference -> normalised relative path, or (reason,) when refused."""
    if not isinstance(value, str):
        return (f"field {field_name!r} must be a string (a relative image path), got {_type_name(value)}",)
    text = value.strip().replace("\\", "/")
    if not text:
        return (f"field {field_name!r} is empty",)
    if "://" in text or text.startswith("data:"):
        return (f"field {field_name!r}: {value!r} is a URL; images must be files inside the upload",)
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return (f"field {field_name!r}: absolute path {value!r} not allowed; use a path relative to the annotation file",)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return (f"field {field_name!r}: path {value!r} contains '..'",)
    if not parts:
        return (f"field {field_name!r} is empty",)
    return "/".join(parts)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- loading


@dataclass
class ValidationReport:
    """What validate_dataset found. `ok` is True when there is no problem at all."""

    ok: bool
    path: str
    format: str | None = None
    kind: str | None = None  # "vqa" or "caption"
    num_samples: int = 0  # usable samples (after dropping bad ones)
    num_bad_samples: int = 0
    num_images: int = 0  # distinct image files used by the usable samples
    annotation_file: str | None = None  # relative to the upload's top
    image_field: str | None = None
    question_field: str | None = None
    answer_field: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def layout(self) -> str | None:
        """Same as `format` (the reader/writer name, e.g. "jsonl")."""
        return self.format

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "path": self.path, "format": self.format, "kind": self.kind,
            "num_samples": self.num_samples, "num_bad_samples": self.num_bad_samples,
            "num_images": self.num_images, "annotation_file": self.annotation_file,
            "image_field": self.image_field, "question_field": self.question_field,
            "answer_field": self.answer_field, "problems": [p.to_dict() for p in self.problems],
        }

    def __str__(self) -> str:
        head = (f"{self.path}: {self.num_samples} {self.kind or ''} samples ({self.format}, {self.annotation_file})"
                if self.format else f"{self.path}: not loadable")
        if self.ok:
            return head + ", no problems"
        return str(DatasetError(self.problems, summary=f"{head}, {len(self.problems)} problem(s)"))


def _remove_tree_if_owner(path: str, pid: int) -> None:
    # a forked child (e.g. a DataLoader worker) must never delete its parent's extraction
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def _open_source(path: Path, work_dir: Any, limits: IngestLimits) -> tuple[Path, Path | None]:
    label = path.name or str(path)
    if path.is_dir():
        return path, None
    if not path.exists():
        raise DatasetError(Problem(label, None, "does not exist"))
    if archive_kind(path) is None:
        raise DatasetError(Problem(label, None, "not a folder, a .zip or a .tar archive"))
    temp = extract_archive(path, work_dir=work_dir, limits=limits, label=label)
    return temp, temp


def _check_images(
    dataset: Dataset, container: Path, limits: IngestLimits, decode: bool, confine: bool
) -> tuple[set[int], list[Problem]]:
    """(positions of samples whose image is unusable, one Problem per such sample). With `confine`
    (extracted archives) an image must resolve inside the container; a user's own folder may
    link its images in from elsewhere."""
    annotation = _container_rel(dataset, container, dataset.annotation_file)
    container_real = os.path.realpath(container)
    groups: dict[str, list[int]] = {}
    for position, sample in enumerate(dataset.samples):
        groups.setdefault(sample.image_path, []).append(position)
    bad: set[int] = set()
    problems: list[Problem] = []
    for rel, positions in groups.items():
        file = dataset.root / rel
        real = os.path.realpath(file)
        message = None
        if confine and real != container_real and not real.startswith(container_real + os.sep):
            message = f"image {rel!r} points outside the dataset folder"
        elif not file.exists():
            message = f"image {rel!r} not found" + _did_you_mean(file)
        elif not file.is_file():
            message = f"image {rel!r} is not a file"
        else:
            try:
                probe_image(file, max_pixels=limits.max_image_pixels, decode=decode)
            except ImageReadError as exc:
                message = f"image {rel!r}: {exc}"
        if message is not None:
            bad.update(positions)
            problems.extend(Problem(annotation, dataset.samples[i].line, message) for i in positions)
    return bad, problems


def _did_you_mean(file: Path) -> str:
    try:
        names = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
    except OSError:
        return ""
    wanted = file.name.casefold()
    close = [n for n in names if n.casefold() == wanted]
    return f" (did you mean {close[0]!r}? names are case-sensitive)" if close else ""


def _container_rel(dataset: Dataset, container: Path, rel: str) -> str:
    try:
        prefix = dataset.root.relative_to(container).as_posix()
    except ValueError:
        prefix = ""
    return rel if prefix in ("", ".") else f"{prefix}/{rel}"


def _sort_key(p: Problem) -> tuple[str, int]:
    return (p.file, p.line or 0)


def _read(
    container: Path, label: str, limits: IngestLimits, format: str | None, decode: bool, confine: bool
) -> tuple[Dataset, list[Problem]]:
    """Detect, read, check images. Returns the dataset holding only usable samples (re-indexed) and
    every problem found. Raises DatasetError only for file-level faults."""
    detection = detect_format(container, format=format, label=label)
    fmt = get_format(detection.format)
    try:
        dataset, problems = fmt.read(container, detection, limits)
    except OSError as exc:
        raise DatasetError(Problem(detection.annotation, None, f"cannot read: {exc.strerror or exc}")) from exc
    bad, image_problems = _check_images(dataset, container, limits, decode, confine)
    problems = sorted([*problems, *image_problems], key=_sort_key)
    dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in bad]
    for index, sample in enumerate(dataset.samples):
        sample.index = index
    dataset.source_root = container
    return dataset, problems


def load_dataset(
    path: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    skip_bad: bool = False,
    format: str | None = None,
    decode_images: bool = True,
) -> Dataset:
    """Load a dataset folder, .zip or .tar(.gz). Archives are extracted safely into a private
    folder under `work_dir` (system temp when None) that lives until `dataset.close()`.

    Raises DatasetError listing every problem (file + line) unless `skip_bad`, in which case
    bad samples are dropped and listed in `dataset.problems` (an error still when none is left).
    `decode_images=False` checks image headers only (faster; truncation is then not caught)."""
    source = Path(path)
    label = source.name or str(source)
    container, temp = _open_source(source, work_dir, limits)
    try:
        dataset, problems = _read(container, label, limits, format, decode_images, temp is not None)
        n_bad = len({(p.file, p.line) for p in problems})
        if not dataset.samples:
            raise DatasetError(problems, summary=f"{label}: no usable samples ({n_bad} bad)")
        if problems and not skip_bad:
            raise DatasetError(problems, summary=f"{label}: {len(problems)} problem(s)" if len(problems) > 1 else None)
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    dataset.problems = problems
    dataset.source_path = source
    dataset.temp_dir = temp
    if temp is not None:
        dataset.cleanup = weakref.finalize(dataset, _remove_tree_if_owner, str(temp), os.getpid())
    return dataset


def validate_dataset(
    path: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    format: str | None = None,
    decode_images: bool = True,
) -> ValidationReport:
    """Check an upload without keeping anything: never raises DatasetError, the report lists
    every problem (file + line). Extracted files are removed before returning."""
    source = Path(path)
    label = source.name or str(source)
    report = ValidationReport(ok=False, path=label)
    temp = None
    try:
        container, temp = _open_source(source, work_dir, limits)
        dataset, problems = _read(container, label, limits, format, decode_images, temp is not None)
    except DatasetError as exc:
        report.problems = list(exc.problems)
        return report
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    report.format = dataset.layout
    report.kind = dataset.kind if dataset.samples else None
    report.num_samples = len(dataset.samples)
    report.num_bad_samples = len({p.line for p in problems if p.line is not None})
    report.num_images = len({s.image_path for s in dataset.samples})
    report.annotation_file = _container_rel(dataset, container, dataset.annotation_file)
    report.image_field = dataset.image_field
    report.question_field = dataset.question_field if dataset.kind == "vqa" else None
    report.answer_field = dataset.answer_field
    report.problems = problems
    if not dataset.samples and not problems:
        problems.append(Problem(report.annotation_file, None, "no samples"))
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


def _inside(child: Path, parent: Path) -> bool:
    child_real, parent_real = os.path.realpath(child), os.path.realpath(parent)
    return child_real == parent_real or child_real.startswith(parent_real.rstrip(os.sep) + os.sep)


def write_protected(
    dataset: Dataset,
    protected: Sequence[ProtectedSample],
    output_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    compress_level: int = 6,
) -> Path:
    """Write the protected dataset with the input's layout and file names.

    `output_path` ending in .zip writes a zip, .tar/.tar.gz/.tgz (.tar.bz2, .tar.xz) a tar,
    anything else a folder. Protected images are saved as PNG (lossless): a .jpg/.webp becomes
    .png in the same folder and the annotation is updated; on a name clash, or when samples
    sharing one image file got different perturbations, a suffix is added (cat_jpg.png,
    cat_17.png). An original image file is left out once every sample using it is protected.
    Annotation texts get the trigger (question, or caption for caption-prefix placement);
    every other field, line and file is copied unchanged. Output is built beside the target
    and moved into place at the end, so a failure leaves no half-written output.
    Returns the output path.
    """
    out = Path(output_path)
    source_root = dataset.source_root or dataset.root
    if not (dataset.root / dataset.annotation_file).is_file():
        raise ValueError(f"the dataset's files are gone ({dataset.root}); write before dataset.close()")
    if _inside(out, source_root) or _inside(source_root, out):
        raise ValueError(f"output {out} must not be inside the input {source_root} (nor contain it)")
    fmt = get_format(dataset.layout)
    by_index = _check_protected(dataset, protected)
    try:
        prefix = dataset.root.relative_to(source_root).as_posix()
    except ValueError:
        prefix = ""
    prefix = "" if prefix == "." else prefix

    groups: dict[str, list[Sample]] = {}
    unprotected_paths: set[str] = set()
    for sample in dataset.samples:
        if sample.index in by_index:
            groups.setdefault(sample.image_path, []).append(sample)
        else:
            unprotected_paths.add(sample.image_path)

    annotation_names = {_join(prefix, dataset.annotation_file)}
    replaced = {_join(prefix, path) for path in groups if path not in unprotected_paths}
    kept = [(file, rel) for file, rel in iter_tree(source_root) if rel not in annotation_names and rel not in replaced]
    taken = {rel.casefold() for _, rel in kept} | {name.casefold() for name in annotation_names}

    updates: dict[int, SampleUpdate] = {}
    new_images: list[tuple[str, np.ndarray]] = []
    # images already .png keep their names first, then the others, in a fixed order
    for path in sorted(groups, key=lambda p: (not p.lower().endswith(".png"), p)):
        distinct: list[tuple[np.ndarray, list[Sample]]] = []
        for sample in sorted(groups[path], key=lambda s: s.index):
            image = np.asarray(by_index[sample.index].image)
            for array, members in distinct:
                if array.shape == image.shape and np.array_equal(array, image):
                    members.append(sample)
                    break
            else:
                distinct.append((image, [sample]))
        for k, (array, members) in enumerate(distinct):
            for name in _png_names(path, None if k == 0 else members[0].index):
                if _join(prefix, name).casefold() not in taken:
                    break
            taken.add(_join(prefix, name).casefold())
            new_images.append((_join(prefix, name), array))
            for sample in members:
                item = by_index[sample.index]
                question = item.question if item.question is not None and item.question != sample.question else None
                answer = item.answer if item.answer != sample.answer else None
                update = SampleUpdate(image_path=None if name == path else name, question=question, answer=answer)
                if update != SampleUpdate():
                    updates[sample.index] = update

    annotations = fmt.write(dataset, updates)
    sink = open_sink(out, overwrite=overwrite)
    try:
        extra = {_join(prefix, rel) for rel in annotations}
        for file, rel in kept:
            if rel not in extra:
                sink.add_file(file, rel)
        for rel, data in annotations.items():
            sink.add_bytes(data, _join(prefix, rel))
        for rel, array in new_images:
            sink.add_bytes(encode_png(array, compress_level=compress_level), rel)
        return sink.commit()
    except BaseException:
        sink.abort()
        raise
