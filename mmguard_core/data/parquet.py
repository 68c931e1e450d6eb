"""The "parquet" format: parquet files holding the image bytes, as Hugging Face `datasets`
(`Dataset.to_parquet`, the Hub's data/train-00000-of-00001.parquet) and img2dataset write them.

Detected: *.parquet files (at the top of the upload or up to three folders down) with an image
column - every such file is part of the dataset (train and test parts alike); parquet files without
one (img2dataset's metadata-only files beside its shards) are not. The image column is, in order:
fields={"image": ...}; a column the file's Hugging Face features call an Image; a struct column with
a binary `bytes` member ({"bytes", "path"}, the datasets layout); a binary column named image, img,
jpg, jpeg, png or webp (img2dataset writes `jpg`). Text columns: `question` + `answer`, or `caption`
/ `text`, renamable with fields=. Rows whose image has no bytes (only a path) are refused.

Read with pyarrow a batch at a time; row count and uncompressed size (from the file's metadata, and
counted again on the bytes read) count against IngestLimits; each image is copied out to a private
folder for the engine. Problems name the file and the 1-based row as the line.

Written back as parquet files of the same names, schema (and its metadata), row groups and
compression: the protected image's PNG bytes replace the original bytes (a struct's `path` is
kept: readers decode the bytes, whatever their format), the trigger goes into the question (or the
caption for caption-prefix placement); caption data getting an instruction trigger without a
question column gets a nullable string `question` column (added to the Hugging Face features too).
Rows dropped as bad (skip_bad) are left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .archive import IngestLimits
from .common import find_files
from .errors import ArchiveError, DatasetError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate
from .sample import Dataset, Sample

NAME = "parquet"
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
QUESTION_COLUMN = "question"
ANSWER_COLUMN = "answer"
CAPTION_COLUMNS = ("caption", "text")
BATCH_ROWS = 64
DESCRIPTION = ("parquet files with an image column holding the image bytes (Hugging Face datasets / "
               "img2dataset layout), at the top level or up to three folders down")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise DatasetError(Problem("", None, "reading parquet needs pyarrow (pip install pyarrow)")) from exc
    return pa, pq


def _hf_features(schema: Any) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        info = json.loads(raw)
        features = info.get("info", {}).get("features", {})
        return features if isinstance(features, dict) else {}
    except (ValueError, AttributeError):
        return {}


def image_column(schema: Any, chosen: str | None = None) -> str | None:
    """The column holding the images (see the module docstring), or None."""
    pa, _ = _pyarrow()
    names = list(schema.names)
    if chosen:
        return chosen if chosen in names else None
    for name, feature in _hf_features(schema).items():
        if isinstance(feature, dict) and feature.get("_type") == "Image" and name in names:
            return name
    for field in schema:
        if pa.types.is_struct(field.type):
            children = {field.type.field(i).name: field.type.field(i).type for i in range(field.type.num_fields)}
            kind = children.get("bytes")
            if kind is not None and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
                return field.name
    for name in IMAGE_COLUMNS:
        if name in names:
            kind = schema.field(name).type
            if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
                return name
    return None


def _has_images(path: Path) -> bool:
    _, pq = _pyarrow()
    try:
        return image_column(pq.read_schema(path)) is not None
    except Exception:  # noqa: BLE001 - a broken file is reported by read, when it is the only one
        return True  # an unreadable .parquet still counts, so its problem is reported


def detect(container: Path) -> Detection | None:
    files = find_files(container, (".parquet",), lambda p: True, depth=3)
    if not files:
        return None
    files = [f for f in files if _has_images(container / f)]
    return Detection(NAME, files[0], files=tuple(files)) if files else None


def _extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


def _text_columns(names: list[str], detection: Detection, file: str) -> tuple[str, str, str | None]:
    """(kind, answer/caption column, question column or None)."""
    question = detection.field("question", QUESTION_COLUMN) or QUESTION_COLUMN
    answer = detection.field("answer", ANSWER_COLUMN) or ANSWER_COLUMN
    chosen_caption = detection.field("caption")
    caption = (chosen_caption if chosen_caption in names else None) if chosen_caption else next(
        (c for c in CAPTION_COLUMNS if c in names), None)
    if answer in names:
        if question not in names:
            raise DatasetError(Problem(file, None, f"VQA data needs a {question!r} column beside {answer!r}"))
        return "vqa", answer, question
    if caption is not None:
        return "caption", caption, None
    wanted = f"{question!r} + {answer!r}, or {chosen_caption or ' or '.join(CAPTION_COLUMNS)!r}"
    raise DatasetError(Problem(file, None, f"no text columns ({wanted}); columns: {', '.join(names)}"))


def _open(path: Path, rel: str) -> Any:
    _, pq = _pyarrow()
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise DatasetError(Problem(rel, None, f"not a readable parquet file ({exc})")) from exc


def read(container: Path, detection: Detection, limits: IngestLimits, scratch: Path) -> tuple[Dataset, list[Problem]]:
    pa, _ = _pyarrow()
    samples: list[Sample] = []
    problems: list[Problem] = []
    totals = {"rows": 0, "bytes": 0}
    kind_seen: tuple[str, str] | None = None
    columns_seen: tuple[str, str, str | None] | None = None
    for rel in detection.all_files():
        path = container / rel
        size = path.stat().st_size
        if size > limits.max_archive_bytes:
            raise ArchiveError(Problem(rel, None, f"file is {size} bytes, over the limit of {limits.max_archive_bytes} (max_archive_bytes)"))
        pf = _open(path, rel)
        try:
            meta, schema = pf.metadata, pf.schema_arrow
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors on a corrupt footer or schema
            raise DatasetError(Problem(rel, None, f"not a readable parquet file ({exc})")) from exc
        totals["rows"] += meta.num_rows
        if totals["rows"] > limits.max_entries:
            raise ArchiveError(Problem(rel, None, f"more than {limits.max_entries} rows in the parquet files (limit max_entries)"))
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if declared > limits.max_total_bytes:
            raise ArchiveError(Problem(rel, None, f"declares {declared} uncompressed bytes, over the limit of "
                                                  f"{limits.max_total_bytes} (max_total_bytes)"))
        image = image_column(schema, detection.field("image"))
        if image is None:
            wanted = detection.field("image") or "an Image feature, a {bytes, path} struct or a binary " + "/".join(IMAGE_COLUMNS)
            raise DatasetError(Problem(rel, None, f"no image column ({wanted}); columns: {', '.join(schema.names)}"))
        kind, answer_col, question_col = _text_columns(list(schema.names), detection, rel)
        if kind_seen is not None and kind != kind_seen[0]:
            raise DatasetError(Problem(rel, None, f"{kind} data, but {kind_seen[1]} is {kind_seen[0]} data"))
        kind_seen = kind_seen or (kind, rel)
        columns_seen = columns_seen or (image, answer_col, question_col)
        struct = pa.types.is_struct(schema.field(image).type)
        wanted_cols = [c for c in (image, answer_col, question_col) if c]
        folder = scratch / rel
        folder.mkdir(parents=True, exist_ok=True)
        row = 0
        try:
            batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted_cols)
            for batch in batches:
                data = batch.to_pydict()
                for k in range(batch.num_rows):
                    row += 1
                    value = data[image][k]
                    blob = value.get("bytes") if struct and isinstance(value, dict) else value
                    if not isinstance(blob, bytes | bytearray) or not blob:
                        where = f" (only a path: {value.get('path')!r})" if struct and isinstance(value, dict) and value.get("path") else ""
                        problems.append(Problem(rel, row, f"column {image!r} holds no image bytes{where}"))
                        continue
                    totals["bytes"] += len(blob)
                    if totals["bytes"] > limits.max_total_bytes:
                        raise ArchiveError(Problem(rel, row, f"images add up to more than {limits.max_total_bytes} bytes (limit max_total_bytes)"))
                    answer = data[answer_col][k]
                    question = data[question_col][k] if question_col else None
                    if not isinstance(answer, str) or not answer.strip():
                        problems.append(Problem(rel, row, f"column {answer_col!r} is empty or not text"))
                        continue
                    if question_col and not isinstance(question, str):
                        problems.append(Problem(rel, row, f"column {question_col!r} is null or not text"))
                        continue
                    name = f"{row:08d}.{_extension(blob)}"
                    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(blob)
                    samples.append(Sample(index=len(samples), image_path=f"{rel}/{name}", answer=answer,
                                          question=question, record={}, line=row, source=rel, locator=(rel, row - 1)))
        except (ArchiveError, DatasetError):
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors on a corrupt file
            raise DatasetError(Problem(rel, row + 1 if row else None, f"cannot read the parquet data ({exc})")) from exc
    files = list(detection.all_files())
    image, answer_col, question_col = columns_seen or ("image", ANSWER_COLUMN, QUESTION_COLUMN)
    kind = kind_seen[0] if kind_seen else "vqa"
    dataset = Dataset(
        root=scratch,
        samples=samples,
        layout=NAME,
        annotation_file=files[0],
        annotation_files=files,
        image_field=image,
        question_field=question_col or (detection.field("question", QUESTION_COLUMN) or QUESTION_COLUMN),
        answer_field=answer_col,
    )
    return dataset, problems


# ---------------------------------------------------------------- writing


def _compression(meta: Any) -> str:
    if meta.num_row_groups == 0 or meta.num_columns == 0:
        return "snappy"
    codec = str(meta.row_group(0).column(0).compression).lower()
    return "none" if codec == "uncompressed" else codec


def _with_question_feature(schema: Any, pa: Any, name: str) -> Any:
    schema = schema.append(pa.field(name, pa.string()))
    metadata = dict(schema.metadata or {})
    raw = metadata.get(b"huggingface")
    if raw:
        try:
            info = json.loads(raw)
            features = info.get("info", {}).get("features")
            if isinstance(features, dict):
                features[name] = {"dtype": "string", "_type": "Value"}
                metadata[b"huggingface"] = json.dumps(info).encode("utf-8")
        except (ValueError, AttributeError):
            pass
    return schema.with_metadata(metadata)


def _write_file(rel: str, source: Path, target: Path, rows: dict[int, Sample], updates: Mapping[int, SampleUpdate],
                dataset: Dataset) -> None:
    pa, pq = _pyarrow()
    pf = pq.ParquetFile(source)
    schema = pf.schema_arrow
    image = dataset.image_field
    add_question = (dataset.question_field not in schema.names
                    and any(updates.get(s.index) is not None and updates[s.index].question is not None for s in rows.values()))
    out_schema = _with_question_feature(schema, pa, dataset.question_field) if add_question else schema
    struct = pa.types.is_struct(schema.field(image).type)
    offset = 0
    with pq.ParquetWriter(target, out_schema, compression=_compression(pf.metadata)) as writer:
        for group in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(group)
            n = table.num_rows
            keep = [offset + k in rows for k in range(n)]
            changed = {k: updates[rows[offset + k].index] for k in range(n)
                       if offset + k in rows and rows[offset + k].index in updates}
            if add_question:
                table = table.append_column(pa.field(dataset.question_field, pa.string()), pa.nulls(n, pa.string()))
            if changed:
                table = _apply(table, changed, image, struct, dataset, pa)
            table = table.filter(pa.array(keep, pa.bool_()))
            if table.num_rows:
                writer.write_table(table.cast(out_schema), row_group_size=max(table.num_rows, 1))
            offset += n


def _apply(table: Any, changed: dict[int, SampleUpdate], image: str, struct: bool, dataset: Dataset, pa: Any) -> Any:
    def replace(column: str, values: dict[int, Any]) -> Any:
        index = table.schema.get_field_index(column)
        field = table.schema.field(index)
        current = table.column(index).to_pylist()
        for k, value in values.items():
            current[k] = value
        return table.set_column(index, field, pa.array(current, type=field.type))

    images: dict[int, Any] = {}
    questions: dict[int, str] = {}
    answers: dict[int, str] = {}
    if any(u.image_file is not None for u in changed.values()):
        originals = table.column(image).to_pylist()
        for k, update in changed.items():
            if update.image_file is None:
                continue
            data = update.image_file.read_bytes()
            images[k] = {**originals[k], "bytes": data} if struct and isinstance(originals[k], dict) else data
    for k, update in changed.items():
        if update.question is not None:
            questions[k] = update.question
        if update.answer is not None:
            answers[k] = update.answer
    if images:
        table = replace(image, images)
    if questions:
        table = replace(dataset.question_field, questions)
    if answers:
        table = replace(dataset.answer_field, answers)
    return table


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate], staging: Path) -> dict[str, Path]:
    by_file: dict[str, dict[int, Sample]] = {}
    for sample in dataset.samples:
        rel, row = sample.locator
        by_file.setdefault(rel, {})[row] = sample
    out: dict[str, Path] = {}
    for n, rel in enumerate(dataset.all_annotation_files()):
        target = staging / f"part-{n}.parquet"
        _write_file(rel, dataset.annotation_base / rel, target, by_file.get(rel, {}), updates, dataset)
        out[rel] = target
    return out


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write, embedded=True)
