"""The "csv" format: images plus ONE CSV annotation file - `metadata.csv` (Hugging Face ImageFolder),
`data.csv` or `train.csv` - at the top of the upload or inside one top-level folder. With
format="csv" any single *.csv there is taken.

A header row names the columns: the image path (relative to the CSV file; the first of file_name,
image, image_path, file, filepath, path, filename) and the text - `question` + `answer` (VQA) or
`caption` / `text` (caption data). Every name can be set with fields={"image": ..., "question": ...,
"answer": ..., "caption": ...}. The delimiter is the header's: ',', ';' or tab. UTF-8 (a BOM is kept).

The writer rewrites only the rows of samples that changed (standard CSV quoting, the row's own line
ending); every other row keeps its exact text, rows dropped as bad (skip_bad) are left out. When
caption data gets an instruction trigger and has no question column, a `question` column is added
at the end (empty for the other rows) - the one change to untouched rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .archive import IngestLimits
from .common import encode_text, files_in, find_files, new_reference, one_file, read_text, sub_folders
from .errors import DatasetError, Problem
from .formats import DatasetFormat, Detection, SampleUpdate, normalize_image_path
from .sample import Dataset, Sample

NAME = "csv"
ANNOTATION_NAMES = ("metadata.csv", "data.csv", "train.csv")
IMAGE_COLUMNS = ("file_name", "image", "image_path", "file", "filepath", "path", "filename")
QUESTION_COLUMN = "question"
ANSWER_COLUMN = "answer"
CAPTION_COLUMNS = ("caption", "text")
DELIMITERS = (",", "\t", ";")
DESCRIPTION = ("one of " + ", ".join(ANNOTATION_NAMES) + " (CSV with a header row) at the top level or "
               "inside one top-level folder")


def _named(path: Path) -> bool:
    return path.name in ANNOTATION_NAMES


def detect(container: Path) -> Detection | None:
    top = [p.name for p in files_in(container, (".csv",)) if _named(p)]
    if top:
        return Detection(NAME, one_file(top, "CSV annotation file at the top") or "")
    found = one_file(find_files(container, (".csv",), _named, depth=1), "CSV annotation file")
    return Detection(NAME, found) if found else None


def detect_explicit(container: Path) -> Detection | None:
    named = detect(container)
    if named is not None:
        return named
    top = [p.name for p in files_in(container, (".csv",))]
    if top:
        return Detection(NAME, one_file(top, "CSV file at the top"))  # type: ignore[arg-type]
    found: list[str] = []
    for sub in sub_folders(container):
        found.extend(f"{sub.name}/{p.name}" for p in files_in(sub, (".csv",)))
    chosen = one_file(found, "CSV file")
    return Detection(NAME, chosen) if chosen else None


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class _Record:
    first: int  # index of its first physical line
    last: int  # index of its last physical line (a quoted field may span lines)
    fields: list[str] | None  # None: a line the csv module could not read
    error: str | None = None


def _physical_lines(text: str) -> list[str]:
    """Lines with their endings ('\\n', '\\r\\n', '' for the last), split on '\\n' only."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _records(lines: list[str], delimiter: str) -> Iterator[_Record]:
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        while consumed < len(lines):
            consumed += 1
            yield lines[consumed - 1]

    reader = csv.reader(feed(), delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    while True:
        first = consumed
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _Record(first, max(first, consumed - 1), None, f"not valid CSV: {exc}")
            continue
        yield _Record(first, max(first, consumed - 1), row)


def _pick(header: list[str], chosen: str | None, candidates: tuple[str, ...]) -> str | None:
    if chosen:
        return chosen if chosen in header else None
    return next((c for c in candidates if c in header), None)


def read(container: Path, detection: Detection, limits: IngestLimits) -> tuple[Dataset, list[Problem]]:
    file = detection.annotation
    text, bom = read_text(container / file, file, limits)
    lines = _physical_lines(text)
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise DatasetError(Problem(file, None, "no samples: the CSV file is empty"))
    delimiter = _delimiter(lines[header_index])
    records = list(_records(lines, delimiter))
    head = next(r for r in records if r.fields or r.error)
    if head.fields is None:
        raise DatasetError(Problem(file, head.first + 1, f"header row: {head.error}"))
    header = head.fields
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DatasetError(Problem(file, head.first + 1, f"duplicate column name(s) in the header: {', '.join(duplicates)}"))
    image_col = _pick(header, detection.field("image"), IMAGE_COLUMNS)
    if image_col is None:
        wanted = detection.field("image") or " or ".join(IMAGE_COLUMNS)
        raise DatasetError(Problem(file, head.first + 1, f"no image column ({wanted}) in the header: {', '.join(header)}"))
    question_col = detection.field("question", QUESTION_COLUMN) or QUESTION_COLUMN
    answer_col = detection.field("answer", ANSWER_COLUMN) or ANSWER_COLUMN
    caption_col = _pick(header, detection.field("caption"), CAPTION_COLUMNS)
    if answer_col in header:
        kind = "vqa"
        if question_col not in header:
            raise DatasetError(Problem(file, head.first + 1, f"VQA data needs a {question_col!r} column beside {answer_col!r}"))
    elif caption_col is not None:
        kind = "caption"
    else:
        wanted = f"{question_col!r} + {answer_col!r}, or {detection.field('caption') or ' or '.join(CAPTION_COLUMNS)!r}"
        raise DatasetError(Problem(file, head.first + 1, f"no text columns ({wanted}) in the header: {', '.join(header)}"))
    position = {name: i for i, name in enumerate(header)}
    problems: list[Problem] = []
    samples: list[Sample] = []
    for record in records:
        if record is head:
            continue
        line = record.first + 1
        if record.fields is None:
            problems.append(Problem(file, line, record.error or "not valid CSV"))
            continue
        if not record.fields or (len(record.fields) == 1 and not record.fields[0].strip()):
            continue  # a blank line
        if len(record.fields) != len(header):
            problems.append(Problem(file, line, f"has {len(record.fields)} fields, the header has {len(header)}"))
            continue
        image = normalize_image_path(record.fields[position[image_col]], image_col)
        if isinstance(image, tuple):
            problems.append(Problem(file, line, image[0]))
            continue
        if kind == "vqa":
            question, answer = record.fields[position[question_col]], record.fields[position[answer_col]]
        else:
            question, answer = None, record.fields[position[caption_col]]  # type: ignore[index]
        if not answer.strip():
            problems.append(Problem(file, line, f"column {answer_col if kind == 'vqa' else caption_col!r} is empty"))
            continue
        samples.append(Sample(index=len(samples), image_path=image, answer=answer, question=question,
                              record=dict(zip(header, record.fields, strict=True)), line=line,
                              locator=(record.first, record.last)))
    dataset = Dataset(
        root=container / detection.root if detection.root else container,
        samples=samples,
        layout=NAME,
        annotation_file=file.rsplit("/", 1)[-1],
        image_field=image_col,
        question_field=question_col,
        answer_field=answer_col if kind == "vqa" else caption_col,  # type: ignore[arg-type]
        options={"delimiter": delimiter, "bom": bom, "header": (head.first, head.last), "columns": header},
    )
    return dataset, problems


def _row_text(fields: list[str], delimiter: str, ending: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quotechar='"', lineterminator=ending,
               quoting=csv.QUOTE_MINIMAL).writerow(fields)
    return buffer.getvalue()


def _ending(text: str) -> str:
    return "\r\n" if text.endswith("\r\n") else "\n" if text.endswith("\n") else ""


def _append_column(text: str, delimiter: str, value: str) -> str:
    ending = _ending(text)
    body = text[: len(text) - len(ending)]
    return body + delimiter + _row_text([value], delimiter, "").rstrip() + ending if value else body + delimiter + ending


def write(dataset: Dataset, updates: Mapping[int, SampleUpdate]) -> dict[str, bytes]:
    data = (dataset.root / dataset.annotation_file).read_bytes()
    bom = data.startswith(b"\xef\xbb\xbf")
    text = (data[3:] if bom else data).decode("utf-8")
    lines = _physical_lines(text)
    delimiter = dataset.options["delimiter"]
    columns: list[str] = list(dataset.options["columns"])
    add_question = (dataset.question_field not in columns
                    and any(u.question is not None for u in updates.values()))
    header_first, header_last = dataset.options["header"]
    by_first = {s.locator[0]: s for s in dataset.samples}
    out: list[str] = []
    i = 0
    while i < len(lines):
        if header_first <= i <= header_last:
            header = "".join(lines[header_first:header_last + 1])
            out.append(_append_column(header, delimiter, dataset.question_field) if add_question else header)
            i = header_last + 1
            continue
        sample = by_first.get(i)
        if sample is None:
            if not lines[i].strip() or i < header_first:
                out.append(lines[i])  # blank lines are kept
            i += 1  # otherwise a bad row dropped by skip_bad (a row spans lines only inside a sample)
            continue
        first, last = sample.locator
        raw = "".join(lines[first:last + 1])
        update = updates.get(sample.index)
        if update is None:
            out.append(_append_column(raw, delimiter, "") if add_question else raw)
        else:
            row = dict(sample.record)
            if update.image_path is not None:
                row[dataset.image_field] = new_reference(row[dataset.image_field], sample.image_path, update.image_path)
            if update.question is not None:
                row[dataset.question_field] = update.question
            if update.answer is not None:
                row[dataset.answer_field] = update.answer
            names = columns + ([dataset.question_field] if add_question else [])
            out.append(_row_text([row.get(c, "") for c in names], delimiter, _ending(raw)))
        i = last + 1
    return {dataset.annotation_file: encode_text("".join(out), bom)}


FORMAT = DatasetFormat(name=NAME, description=DESCRIPTION, detect=detect, read=read, write=write,
                       detect_explicit=detect_explicit)
