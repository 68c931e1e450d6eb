"""Idempotency-Key on POST /datasets and POST /jobs.

The key is stored on the row it created, unique per owner (a unique index on (owner_id,
idempotency_key); NULLs never collide), with the SHA-256 of the request's identity: the uploaded
file's content for a dataset, the canonical JSON body for a job. A repeat with the same key and
the same identity answers the original object (header `Idempotent-Replayed: true`); the same key
with another identity is refused (422). Concurrent repeats are settled by the unique index.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.models import Dataset, Job, Owner

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces

Row = TypeVar("Row", Dataset, Job)


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ApiError(422, f"{HEADER} must be 1 to 255 printable ASCII characters without spaces")
    return value


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def find(session: Session, model: type[Row], owner: Owner, key: str) -> Row | None:
    return session.scalar(select(model).where(model.owner_id == owner.id, model.idempotency_key == key))


def check_same(row: Dataset | Job, request_hash: str, what: str) -> None:
    if row.request_hash != request_hash:
        raise ApiError(
            422,
            f"{HEADER} was already used for another {what} request with a different body; "
            "use a new key for a new request",
        )
