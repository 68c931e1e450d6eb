"""Safe ingestion of uploaded archives (.zip, .tar, .tar.gz/.tgz/.tar.bz2/.tar.xz) and
writing of output archives.

Extraction streams entry by entry (never the whole archive in memory) into a private
folder (mode 0700) and refuses, naming the entry:
  - absolute paths, drive letters, `..` components (zip-slip), control characters, names
    that are not UTF-8;
  - symlinks, hard links, device files, FIFOs, sparse and encrypted entries;
  - duplicate or conflicting entries;
  - more entries, more uncompressed bytes, a larger archive or a higher compression
    ratio than IngestLimits allows (counted on the bytes actually written, not only on
    what the headers claim).
Nothing is ever written outside the extraction folder: every target path is built from
checked components, re-checked against the folder, and opened with O_EXCL | O_NOFOLLOW.
On refusal the caller removes the folder (see `extract_archive`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import ArchiveError, Problem
from .images import DEFAULT_MAX_IMAGE_PIXELS

GiB = 1024**3
MiB = 1024**2
CHUNK = MiB

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# never extracted (and so never a second annotation candidate): macOS and Windows litter
JUNK_DIRS = frozenset({"__MACOSX"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class IngestLimits:
    """Caps on what one upload may hold. Archive caps apply to archives only; the pixel and
    annotation caps to folders too."""

    max_archive_bytes: int = 4 * GiB  # size of the uploaded archive file
    max_entries: int = 200_000  # files + folders in the archive
    max_total_bytes: int = 16 * GiB  # uncompressed bytes extracted, all entries together
    max_compression_ratio: float = 100.0  # uncompressed / compressed, per zip entry and for the whole archive
    ratio_min_bytes: int = 1 * MiB  # entries (and archives) smaller than this uncompressed skip the ratio check
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # width * height of any one image
    max_annotation_bytes: int = 512 * MiB  # the annotation file itself

    def __post_init__(self) -> None:
        for name in ("max_archive_bytes", "max_entries", "max_total_bytes", "ratio_min_bytes",
                     "max_image_pixels", "max_annotation_bytes"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"IngestLimits.{name} must be >= 0")
        if not self.max_compression_ratio > 0:
            raise ValueError("IngestLimits.max_compression_ratio must be > 0")


DEFAULT_LIMITS = IngestLimits()


def archive_kind(path: str | os.PathLike[str]) -> str | None:
    """'zip', 'tar' or None (a folder or not an archive). By name first, then by content."""
    p = Path(path)
    if p.is_dir():
        return None
    name = p.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if not p.is_file():
        return None
    if zipfile.is_zipfile(p):
        return "zip"
    try:
        if tarfile.is_tarfile(p):
            return "tar"
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return None
    return None


def output_kind(path: str | os.PathLike[str]) -> str:
    """'zip', 'tar', 'tar.gz' (also .tgz), 'tar.bz2', 'tar.xz' or 'folder' - decided by the name only."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith((".tar.bz2", ".tbz2")):
        return "tar.bz2"
    if name.endswith((".tar.xz", ".txz")):
        return "tar.xz"
    return "folder"


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relative_parts(name: str) -> tuple[str, ...] | str:
    """Checked path components of an archive entry name, or a string saying why it is refused.

    Backslashes count as separators (archives made on Windows); '.' and empty components
    are dropped; an empty result means the archive root itself."""
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        return "name contains a control character"
    if any("\ud800" <= ch <= "\udfff" for ch in name):  # tar names that were not UTF-8 (surrogateescape)
        return "name is not valid UTF-8"
    text = name.replace("\\", "/")
    if text.startswith("/"):
        return "absolute path"
    if _DRIVE.match(text):
        return "absolute path (drive letter)"
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    if ".." in parts:
        return "path contains '..' (zip-slip)"
    return parts


def is_junk(parts: tuple[str, ...]) -> bool:
    return bool(parts) and (parts[0] in JUNK_DIRS or parts[-1] in JUNK_FILES or parts[-1].startswith("._"))


class _Extractor:
    """Writes checked entries under `dest`; every refusal is an ArchiveError naming the entry."""

    def __init__(self, archive: Path, dest: Path, limits: IngestLimits, label: str):
        self.archive = archive
        self.dest = dest
        self.dest_real = os.path.realpath(dest)
        self.limits = limits
        self.label = label
        self.total = 0
        self.entries = 0

    def refuse(self, message: str, entry: str | None = None) -> ArchiveError:
        text = f"entry {entry!r}: {message}" if entry is not None else message
        return ArchiveError(Problem(self.label, None, text), summary=None)

    def count_entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise self.refuse(f"more than {self.limits.max_entries} entries (limit max_entries)", name)

    def parts(self, name: str) -> tuple[str, ...]:
        parts = safe_relative_parts(name)
        if isinstance(parts, str):
            raise self.refuse(f"refused: {parts}", name)
        return parts

    def _target(self, parts: tuple[str, ...], name: str) -> Path:
        target = self.dest.joinpath(*parts)
        real_parent = os.path.realpath(target.parent)
        if real_parent != self.dest_real and not real_parent.startswith(self.dest_real + os.sep):
            raise self.refuse("refused: resolves outside the extraction folder", name)
        return target

    def make_dir(self, parts: tuple[str, ...], name: str) -> Path:
        current = self.dest
        for part in parts:
            current = current / part
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                if current.is_symlink() or not current.is_dir():
                    raise self.refuse("conflicts with a file of the same name", name) from None
            except OSError as exc:
                raise self.refuse(f"cannot create folder: {exc.strerror or exc}", name) from exc
        return current

    def write_file(self, parts: tuple[str, ...], name: str, source: BinaryIO, declared: int) -> int:
        if not parts:
            raise self.refuse("refused: a file entry with an empty name", name)
        self.check_total(declared, name)
        self.make_dir(parts[:-1], name)
        target = self._target(parts, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError:
            raise self.refuse("duplicate entry (or conflicts with a folder)", name) from None
        except OSError as exc:
            raise self.refuse(f"cannot create file: {exc.strerror or exc}", name) from exc
        written = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                self.check_total(written, name)
                self.after_chunk(name, written)
                out.write(chunk)
        self.total += written
        return written

    def check_total(self, pending: int, name: str) -> None:
        if self.total + pending > self.limits.max_total_bytes:
            raise self.refuse(
                f"archive expands to more than {self.limits.max_total_bytes} bytes (limit max_total_bytes)", name
            )

    def after_chunk(self, name: str, written: int) -> None:
        """Hook: the tar reader checks the whole-stream compression ratio here."""


def _check_archive_size(archive: Path, limits: IngestLimits, label: str) -> int:
    size = archive.stat().st_size
    if size > limits.max_archive_bytes:
        raise ArchiveError(
            Problem(label, None, f"archive is {size} bytes, over the limit of {limits.max_archive_bytes} (max_archive_bytes)")
        )
    return size


def _ratio_exceeded(uncompressed: int, compressed: int, limits: IngestLimits) -> bool:
    return uncompressed > limits.ratio_min_bytes and uncompressed > limits.max_compression_ratio * max(compressed, 1)


def _extract_zip(archive: Path, dest: Path, limits: IngestLimits, label: str) -> None:
    size = _check_archive_size(archive, limits, label)
    ex = _Extractor(archive, dest, limits, label)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ArchiveError(Problem(label, None, f"not a readable zip archive ({exc})")) from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ex.refuse(f"archive has {len(infos)} entries, over the limit of {limits.max_entries} (max_entries)")
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_total_bytes:
            raise ex.refuse(
                f"archive declares {declared} uncompressed bytes, over the limit of {limits.max_total_bytes} (max_total_bytes)"
            )
        if _ratio_exceeded(declared, size, limits):
            raise ex.refuse(
                f"compression ratio {declared / max(size, 1):.0f}:1 is over the limit of "
                f"{limits.max_compression_ratio:g}:1 (possible zip bomb)"
            )
        # first pass: check every entry before writing anything
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        for info in infos:
            name = info.filename
            parts = ex.parts(name)
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise ex.refuse("refused: symbolic link", name)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ex.refuse("refused: device, FIFO or other special file", name)
            if info.flag_bits & 0x1:
                raise ex.refuse("refused: encrypted entry", name)
            if not info.is_dir() and _ratio_exceeded(info.file_size, info.compress_size, limits):
                raise ex.refuse(
                    f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 is over the limit of "
                    f"{limits.max_compression_ratio:g}:1 (possible zip bomb)",
                    name,
                )
            if is_junk(parts):
                continue
            plan.append((info, parts))
        for info, parts in plan:
            name = info.filename
            if info.is_dir():
                ex.make_dir(parts, name)
                continue
            try:
                with zf.open(info) as source:
                    ex.write_file(parts, name, source, info.file_size)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                raise ex.refuse(f"cannot be read: {exc}", name) from exc


class _TarExtractor(_Extractor):
    def __init__(self, archive: Path, dest: Path, limits: IngestLimits, label: str, size: int, compressed: bool):
        super().__init__(archive, dest, limits, label)
        self.size = size
        self.compressed = compressed

    def after_chunk(self, name: str, written: int) -> None:
        if self.compressed and _ratio_exceeded(self.total + written, self.size, self.limits):
            raise self.refuse(
                f"archive expands more than {self.limits.max_compression_ratio:g} times its size (possible "
                "decompression bomb)",
                name,
            )


def _tar_compressed(archive: Path) -> bool:
    with open(archive, "rb") as fh:
        magic = fh.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _extract_tar(archive: Path, dest: Path, limits: IngestLimits, label: str) -> None:
    size = _check_archive_size(archive, limits, label)
    ex = _TarExtractor(archive, dest, limits, label, size, _tar_compressed(archive))
    try:
        tf = tarfile.open(archive, mode="r|*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(Problem(label, None, f"not a readable tar archive ({exc})")) from exc
    try:
        with tf:
            for member in tf:
                name = member.name
                ex.count_entry(name)
                parts = ex.parts(name)
                if member.issym():
                    raise ex.refuse(f"refused: symbolic link (to {member.linkname!r})", name)
                if member.islnk():
                    raise ex.refuse(f"refused: hard link (to {member.linkname!r})", name)
                if member.ischr() or member.isblk() or member.isfifo():
                    raise ex.refuse("refused: device or FIFO file", name)
                if member.issparse():
                    raise ex.refuse("refused: sparse file", name)
                if member.isdir():
                    if not is_junk(parts):
                        ex.make_dir(parts, name)
                    continue
                if not member.isreg():
                    raise ex.refuse(f"refused: unsupported entry type {member.type!r}", name)
                if is_junk(parts):
                    continue
                source = tf.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise ex.refuse("cannot be read", name)
                with source:
                    ex.write_file(parts, name, source, member.size)
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(Problem(label, None, f"archive is corrupt or truncated ({exc})")) from exc


def extract_archive(
    archive: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    label: str | None = None,
) -> Path:
    """Extract into a new private folder (mode 0700) under `work_dir` (the system temp folder
    when None) and return it. On any refusal the folder is removed and ArchiveError raised."""
    path = Path(archive)
    label = label or path.name
    kind = archive_kind(path)
    if kind is None:
        raise ArchiveError(Problem(label, None, "not a folder, a .zip or a .tar archive"))
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="mmguard-extract-", dir=work_dir))
    try:
        if kind == "zip":
            _extract_zip(path, dest, limits, label)
        else:
            _extract_tar(path, dest, limits, label)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


# ---------------------------------------------------------------- writing


def check_output_path(output: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, an output that write_protected could not create: an existing file or
    non-empty folder (unless `overwrite`), or a place under a file or an unwritable folder."""
    empty_dir = output.is_dir() and not output.is_symlink() and not any(output.iterdir())
    if (output.exists() or output.is_symlink()) and not overwrite and not empty_dir:
        raise FileExistsError(f"{output} already exists (pass overwrite=True to replace it)")
    ancestor = output.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{output}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{output}: cannot write in {ancestor} (permission denied)")


def is_inside(child: Path, parent: Path) -> bool:
    """Whether `child` is `parent` or lies under it, links resolved."""
    child_real, parent_real = os.path.realpath(child), os.path.realpath(parent)
    return child_real == parent_real or child_real.startswith(parent_real.rstrip(os.sep) + os.sep)


def write_result_file(path: Path, text: str) -> None:
    """Write a command's result (a JSON report) whole or not at all: beside the target first, then
    moved over it, so a full disk or a Ctrl-C never leaves a truncated file where the last one was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def check_result_file(path: Path, label: str) -> None:
    """A file a command will (over)write at its end, e.g. a JSON report: refuse a folder or a place it
    could not be created, before the work starts. `label` names the option in the message."""
    if path.is_dir():
        raise IsADirectoryError(f"{label} {path} is a folder; name a file")
    check_output_path(path, overwrite=True)


class OutputSink:
    """Where write_protected puts files: a folder, a zip or a tar. Paths are '/'-separated and
    relative. Everything goes to a temporary sibling first and is moved into place by commit()."""

    def __init__(self, output: Path, overwrite: bool):
        self.output = output
        self.overwrite = overwrite
        check_output_path(output, overwrite)
        output.parent.mkdir(parents=True, exist_ok=True)
        self.names: set[str] = set()

    def _claim(self, arcname: str) -> None:
        parts = safe_relative_parts(arcname)
        if isinstance(parts, str) or not parts:
            raise ValueError(f"refusing to write {arcname!r}: {parts or 'empty name'}")
        key = "/".join(parts).casefold()
        if key in self.names:
            raise ValueError(f"two output files named {arcname!r}")
        self.names.add(key)

    def add_file(self, source: Path, arcname: str) -> None:
        raise NotImplementedError

    def add_bytes(self, data: bytes, arcname: str) -> None:
        raise NotImplementedError

    def commit(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def _replace_existing(self) -> None:
        if self.output.is_symlink() or self.output.is_file():
            self.output.unlink()
        elif self.output.is_dir():
            shutil.rmtree(self.output)


class FolderSink(OutputSink):
    def __init__(self, output: Path, overwrite: bool):
        super().__init__(output, overwrite)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.part-", dir=output.parent))

    def _path(self, arcname: str) -> Path:
        self._claim(arcname)
        target = self.staging.joinpath(*PurePosixPath(arcname.replace("\\", "/")).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_file(self, source: Path, arcname: str) -> None:
        shutil.copyfile(source, self._path(arcname))

    def add_bytes(self, data: bytes, arcname: str) -> None:
        self._path(arcname).write_bytes(data)

    def commit(self) -> Path:
        os.chmod(self.staging, 0o755)
        if self.output.exists() or self.output.is_symlink():
            self._replace_existing()
        os.replace(self.staging, self.output)
        return self.output

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


_STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gz", ".zip", ".mp4")


class ZipSink(OutputSink):
    def __init__(self, output: Path, overwrite: bool):
        super().__init__(output, overwrite)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.zf = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)

    def _compression(self, arcname: str) -> int:
        return zipfile.ZIP_STORED if arcname.lower().endswith(_STORED_SUFFIXES) else zipfile.ZIP_DEFLATED

    def add_file(self, source: Path, arcname: str) -> None:
        self._claim(arcname)
        self.zf.write(source, arcname, compress_type=self._compression(arcname))

    def add_bytes(self, data: bytes, arcname: str) -> None:
        self._claim(arcname)
        info = zipfile.ZipInfo(arcname, date_time=time.localtime()[:6])
        info.compress_type = self._compression(arcname)
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        self.zf.writestr(info, data)

    def commit(self) -> Path:
        self.zf.close()
        os.chmod(self.tmp, 0o644)
        if self.output.exists() or self.output.is_symlink():
            self._replace_existing()
        os.replace(self.tmp, self.output)
        return self.output

    def abort(self) -> None:
        try:
            self.zf.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class TarSink(OutputSink):
    def __init__(self, output: Path, overwrite: bool, compression: str):
        super().__init__(output, overwrite)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        mode = "w" if not compression else f"w:{compression}"
        self.tf = tarfile.open(self.tmp, mode=mode, format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]

    def _info(self, arcname: str, size: int, mtime: float) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.size = size
        info.mtime = int(mtime)
        info.mode = 0o644
        info.type = tarfile.REGTYPE
        return info

    def add_file(self, source: Path, arcname: str) -> None:
        self._claim(arcname)
        st = source.stat()
        with open(source, "rb") as fh:
            self.tf.addfile(self._info(arcname, st.st_size, st.st_mtime), fh)

    def add_bytes(self, data: bytes, arcname: str) -> None:
        self._claim(arcname)
        self.tf.addfile(self._info(arcname, len(data), time.time()), io.BytesIO(data))

    def commit(self) -> Path:
        self.tf.close()
        os.chmod(self.tmp, 0o644)
        if self.output.exists() or self.output.is_symlink():
            self._replace_existing()
        os.replace(self.tmp, self.output)
        return self.output

    def abort(self) -> None:
        try:
            self.tf.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def open_sink(output: str | os.PathLike[str], *, overwrite: bool = False) -> OutputSink:
    """A sink for `output`: .zip -> zip, .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz -> tar, anything else -> folder."""
    path = Path(output)
    kind = output_kind(path)
    if kind == "folder":
        return FolderSink(path, overwrite)
    if kind == "zip":
        return ZipSink(path, overwrite)
    return TarSink(path, overwrite, {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}[kind])


def iter_tree(root: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under `root`, sorted, as (path, '/'-separated relative name). Symlinks are
    followed (a user's folder may link its images in); a folder seen before (a link cycle) is
    not entered twice. Extraction folders never hold links."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if not path.is_file():
                continue
            yield path, path.relative_to(root).as_posix()
