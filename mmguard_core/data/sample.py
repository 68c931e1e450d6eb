"""In-memory form of an image-text dataset, shared by every reader and writer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import Problem

SampleKind = Literal["vqa", "caption"]


@dataclass
class Sample:
    """One image-text pair.

    `question` is None for caption data; `answer` holds the answer or the caption
    (the text a fine-tuned model learns to produce). `record` is the original
    annotation object, kept whole so writers change nothing but the image path
    and the trigger text. `line` is the 1-based line in the annotation file.
    """

    index: int
    image_path: str  # relative to Dataset.root, as written in the annotation (normalised to '/')
    answer: str
    question: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # 0 = no line (e.g. a WebDataset sample); parquet: the 1-based row
    source: str | None = None  # annotation file of this sample, relative to the upload's top, when a
    # format has several (shards, parquet parts); problems name it. None = Dataset.annotation_file
    locator: Any = None  # where the record sits in its file, for the writer (array index, shard key, row)

    @property
    def kind(self) -> SampleKind:
        return "caption" if self.question is None else "vqa"


@dataclass
class Dataset:
    """Samples plus where their images live and how the annotation was laid out."""

    root: Path  # folder holding the images (for archives: a private extraction folder)
    samples: list[Sample]
    layout: str = "jsonl"  # reader name that produced it; the writer of the same name writes it back
    annotation_file: str = "data.jsonl"
    image_field: str = "image"
    question_field: str = "question"
    answer_field: str = "answer"  # "caption" for caption data
    # where it came from (set by load_dataset)
    source_root: Path | None = None  # the whole uploaded tree (extraction folder or input folder); root is it or one folder in it
    source_path: Path | None = None  # what was passed to load_dataset (folder or archive)
    temp_dir: Path | None = None  # private extraction folder to remove on close(), None for folder input
    problems: list[Problem] = field(default_factory=list)  # what skip_bad=True dropped (empty otherwise)
    warnings: list[Problem] = field(default_factory=list)  # not fatal: e.g. image files no sample uses
    cleanup: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    # formats with several annotation files (COCO keeps one; WebDataset shards, parquet parts): every
    # file the writer rewrites, relative to annotation_base. Empty = [annotation_file].
    annotation_files: list[str] = field(default_factory=list)
    # formats that keep images inside their files (WebDataset, parquet): the private folder the images
    # were copied out to (this is `root` then, and annotation files are relative to source_root)
    scratch_dir: Path | None = None
    bare_archive: str | None = None  # the input was this one archive, itself the dataset (a bare shard)
    reserved_names: set[str] = field(default_factory=set)  # image paths a renamed image must not take
    options: dict[str, Any] = field(default_factory=dict)  # format-specific state kept for the writer

    @property
    def kind(self) -> SampleKind:
        return self.samples[0].kind if self.samples else "vqa"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def annotation_base(self) -> Path:
        """The folder annotation_file(s) are relative to: root, or for formats that keep images inside
        their files (scratch_dir set) the upload's top."""
        if self.scratch_dir is not None and self.source_root is not None:
            return self.source_root
        return self.root

    def all_annotation_files(self) -> list[str]:
        return list(self.annotation_files) or [self.annotation_file]

    def image_groups(self) -> dict[str, list[int]]:
        """Sample indices per image file (first use first). Several samples may share one image (COCO:
        one sample per caption); an engine that perturbs once per group gets one file per image."""
        groups: dict[str, list[int]] = {}
        for sample in self.samples:
            groups.setdefault(sample.image_path, []).append(sample.index)
        return groups

    def image_file(self, sample: Sample | int) -> Path:
        """Absolute path of a sample's image file (valid until close())."""
        item = self.samples[sample] if isinstance(sample, int) else sample
        return self.root / item.image_path

    def close(self) -> None:
        """Remove the private extraction folder, if any (safe to call twice). Also runs when the
        Dataset is garbage-collected, in the process that loaded it only."""
        if self.cleanup is not None:
            self.cleanup()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ProtectedSample:
    """What the engine hands a writer for one sample: the perturbed 8-bit image (H, W, C uint8,
    C = 3, or 4 when the source had alpha, which is kept untouched) and the updated annotation texts."""

    index: int
    image: Any  # numpy.ndarray, uint8, (H, W, C)
    question: str | None  # with the trigger inserted (None for caption data)
    answer: str  # unchanged, except caption-prefix trigger placement
    trigger: str | None = None
