"""In-memory form of an image-text dataset, shared by every reader and writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    line: int = 0

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

    @property
    def kind(self) -> SampleKind:
        return self.samples[0].kind if self.samples else "vqa"

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class ProtectedSample:
    """What the engine hands a writer for one sample: the perturbed 8-bit image (H, W, C uint8,
    C = 3, or 4 when the source had alpha, which is kept untouched) and the updated annotation texts."""

    index: int
    image: Any  # numpy.ndarray, uint8, (H, W, C)
    question: str | None  # with the trigger inserted (None for caption data)
    answer: str  # unchanged, except caption-prefix trigger placement
    trigger: str | None = None
