"""Fixtures for the pipeline tests: a real `mmguard serve` (embedded: SQLite, filesystem queue, worker
child) that may call webhooks on 127.0.0.1, and its local owner's key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from service.helpers import (
    dataset_zip,
    start_embedded,
)

WEBHOOK_ENV = {
    "MMGUARD_WEBHOOK_ALLOW": json.dumps(["127.0.0.1"]),  # the test receiver; everything else private is refused
    "MMGUARD_WEBHOOK_RETRY_DELAYS": json.dumps([0.5, 1.0]),
}


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    proc, info = start_embedded(tmp_path_factory.mktemp("pipeline-embedded"), WEBHOOK_ENV)
    try:
        yield {**info, "url": info["origin"]}
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset_zip(tmp_path_factory.mktemp("pipeline-data"), n=4)
