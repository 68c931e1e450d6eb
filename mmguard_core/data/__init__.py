"""Dataset reading, validation and writing (one reader/writer per format), numpy + Pillow (+ pyarrow
for parquet) only.

Formats (docs/formats.md): jsonl (incl. HF ImageFolder metadata.jsonl), csv (incl. metadata.csv),
llava, coco, webdataset, parquet - detected, or named with format=.
Never imports torch: the web API validates uploads with this package.

    ds = load_dataset("upload.zip", work_dir=tmp)          # Dataset, or DatasetError (file + line)
    ds = load_dataset("shards/", format="webdataset", fields={"caption": "text"})  # override detection
    report = validate_dataset("upload.zip")                # ValidationReport, never raises DatasetError
    rgb, alpha = read_image_uint8(ds.image_file(0))        # the 8-bit original
    img = quantize_with_bound(rgb, rgb / 255 + delta, eps) # uint8 that keeps the L-inf bound
    write_protected(ds, [ProtectedSample(0, img, q, a)], "out.zip")
    ds.close()                                             # removes the private extraction folder
"""

from .archive import DEFAULT_LIMITS, IngestLimits, archive_kind, extract_archive
from .errors import ArchiveError, DatasetError, Problem
from .formats import (
    FIELD_ROLES,
    FORMATS,
    DatasetFormat,
    Detection,
    SampleUpdate,
    ValidationReport,
    available_formats,
    detect_format,
    get_format,
    load_dataset,
    register_format,
    validate_dataset,
    write_protected,
)
from .images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_FORMATS,
    ImageInfo,
    ImageReadError,
    encode_png,
    epsilon_steps,
    load_image,
    load_image_with_alpha,
    merge_alpha,
    probe_image,
    quantize_with_bound,
    read_image_uint8,
    save_png,
    to_float,
)
from .sample import Dataset, ProtectedSample, Sample, SampleKind

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "FIELD_ROLES",
    "FORMATS",
    "IMAGE_FORMATS",
    "ArchiveError",
    "Dataset",
    "DatasetError",
    "DatasetFormat",
    "Detection",
    "ImageInfo",
    "ImageReadError",
    "IngestLimits",
    "Problem",
    "ProtectedSample",
    "Sample",
    "SampleKind",
    "SampleUpdate",
    "ValidationReport",
    "archive_kind",
    "available_formats",
    "detect_format",
    "encode_png",
    "epsilon_steps",
    "extract_archive",
    "get_format",
    "load_dataset",
    "load_image",
    "load_image_with_alpha",
    "merge_alpha",
    "probe_image",
    "quantize_with_bound",
    "read_image_uint8",
    "register_format",
    "save_png",
    "to_float",
    "validate_dataset",
    "write_protected",
]
