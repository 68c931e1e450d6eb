"""The local storage refuses keys that could leave its root and writes atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.storage import LocalStorage, StorageError


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "", ".hidden", "a/.", "a\\b", "a b"])
def test_bad_keys_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError):
        LocalStorage(tmp_path).exists(key)


def test_write_is_atomic_and_cleans_up(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(RuntimeError), storage.writer("jobs/1/report.json") as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert not storage.exists("jobs/1/report.json")
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    with storage.writer("jobs/1/report.json") as out:
        out.write(b"{}")
    assert storage.size("jobs/1/report.json") == 2 and b"".join(storage.iter_chunks("jobs/1/report.json")) == b"{}"
    storage.delete_prefix("jobs/1")
    assert not (tmp_path / "root" / "jobs" / "1").exists()
    storage.check()
