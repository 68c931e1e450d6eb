"""Errors raised by the data layer: every problem names the file (and line) at fault.

File names in problems are relative to the uploaded folder or archive (never a private
temp path), so a message can be shown to the person who uploaded the data as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: `file` (relative, '/'-separated), `line` (1-based) or None."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file} line {self.line}"
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "message": self.message}


def format_problems(problems: Iterable[Problem], limit: int = MAX_LISTED_PROBLEMS) -> str:
    """One problem per line, the first `limit` of them, then how many were left out."""
    items = list(problems)
    lines = [f"  {p}" for p in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more problem(s)")
    return "\n".join(lines)


class DatasetError(ValueError):
    """The dataset (or archive) cannot be used as it is; `problems` lists every reason found."""

    def __init__(self, problems: Problem | Iterable[Problem], summary: str | None = None):
        self.problems: list[Problem] = [problems] if isinstance(problems, Problem) else list(problems)
        self.summary = summary
        super().__init__(self._text())

    def _text(self) -> str:
        if len(self.problems) == 1 and not self.summary:
            return str(self.problems[0])
        head = self.summary or f"the dataset has {len(self.problems)} problems"
        if not self.problems:
            return head
        return f"{head}:\n{format_problems(self.problems)}"

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self):  # pickles whole (Celery results, multiprocessing)
        return (type(self), (self.problems, self.summary))


class ArchiveError(DatasetError):
    """An archive was refused: unsafe entry (zip-slip, link, device file) or over an ingest limit."""


def problem(file: str, message: str, line: int | None = None) -> Problem:
    return Problem(file=file, line=line, message=message)
