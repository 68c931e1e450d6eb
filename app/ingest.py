"""Dataset upload: stream one multipart field to storage under a size cap, then validate it.

The body is parsed as it arrives (python-multipart's push parser), so an upload is never held
whole in memory nor spooled anywhere but its final storage place; past the cap the upload stops
with UploadTooLarge (413).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.storage import Storage

FILE_FIELD = "file"
_SNIFF_BYTES = 512


class UploadError(ValueError):
    """The request is not a usable upload (422); the message says why."""


class UploadTooLarge(UploadError):
    """The upload passed the configured size cap (413)."""


class DatasetRejected(ValueError):
    """The archive holds no usable dataset (422); `problems` lists file, line and message."""

    def __init__(self, message: str, problems: list[dict[str, object]]):
        super().__init__(message)
        self.problems = problems


@dataclass
class ReceivedFile:
    filename: str
    size: int
    archive_format: str  # zip | tar
    sha256: str = ""  # of the file's content, computed while streaming (Idempotency-Key identity)


@dataclass
class DatasetSummary:
    sample_count: int
    layout: str
    kind: str


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None


class _FileSink:
    """Multipart callbacks: the first part named `file` goes to `out`, other parts are dropped."""

    def __init__(self, out, max_bytes: int) -> None:  # noqa: ANN001 - a binary file object
        self.out = out
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self.found = False
        self.filename = ""
        self.too_large = False
        self.digest = hashlib.sha256()
        self._part = _Part()
        self._writing = False
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        disposition = self._part.headers.get("content-disposition", "")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        filename = options.get(b"filename")
        self._part.name = name.decode("utf-8", "replace") if name is not None else None
        self._part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._writing = self._part.name == FILE_FIELD and not self.found
        if self._writing:
            self.found = True
            self.filename = Path((self._part.filename or "dataset").replace("\\", "/")).name[:255]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._writing or self.too_large:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.too_large = True
            return
        if len(self.head) < _SNIFF_BYTES:
            self.head += chunk[: _SNIFF_BYTES - len(self.head)]
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_part_end(self) -> None:
        self._writing = False


def archive_format(head: bytes) -> str:
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        raise UploadError("compressed tar archives (.tar.gz) are not supported: upload a .zip or a plain .tar")
    raise UploadError("the uploaded file is not a .zip or .tar archive")


async def receive_upload(
    content_type: str | None,
    body: AsyncIterator[bytes],
    storage: Storage,
    key: str,
    max_bytes: int,
) -> ReceivedFile:
    """Stream the `file` field of a multipart body into `storage[key]`; the object exists only on success."""
    mime, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError("send the dataset as multipart/form-data with the archive in a field named 'file'")
    with storage.writer(key) as out:
        sink = _FileSink(out, max_bytes)
        parser = MultipartParser(boundary, sink.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in body:
                parser.write(chunk)
                if sink.too_large:
                    raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
            parser.finalize()
        except UploadError:
            raise
        except Exception as exc:  # python-multipart raises its own errors on malformed bodies
            raise UploadError(f"malformed multipart body: {exc}") from exc
        if not sink.found:
            raise UploadError("form field 'file' is missing: send the archive as -F file=@dataset.zip")
        if sink.size == 0:
            raise UploadError("the uploaded file is empty")
        fmt = archive_format(sink.head)
    return ReceivedFile(filename=sink.filename, size=sink.size, archive_format=fmt, sha256=sink.digest.hexdigest())


def validate_archive(path: Path, work_dir: Path, max_bytes: int) -> DatasetSummary:
    """Check the stored archive with the engine's torch-free validator; DatasetRejected when unusable."""
    from mmguard_core.data import IngestLimits, validate_dataset

    report = validate_dataset(path, work_dir=work_dir, limits=IngestLimits(max_archive_bytes=max_bytes))
    problems = [p.to_dict() for p in report.problems]
    if not report.ok or problems:
        first = str(report.problems[0]) if report.problems else "the dataset cannot be read"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DatasetRejected(first + more, problems)
    if report.num_samples == 0:
        raise DatasetRejected("the dataset holds no samples", [])
    return DatasetSummary(sample_count=report.num_samples, layout=str(report.format), kind=str(report.kind))
