"""The embedded queue under a busy consumer: every message arrives, whole, exactly once.

kombu's stock filesystem transport lost about 1 message in 15 this way (a consumer took a file
before its producer had written it), which left embedded jobs `queued` for ever. On a fresh queue
folder the same run also caught two exchange-table races: a publish that read the table while
its first bind was writing it (JSONDecodeError), and a thread that published before another
thread's bind had reached the disk (the first messages dropped unrouted)."""

from __future__ import annotations

import threading
from pathlib import Path

from celery import Celery

from app.core.config import Settings
from app.core.queue import make_celery

from .helpers import wait_for

MESSAGES = 1500


def _consume(celery: Celery, into: list, errors: list, stop: threading.Event) -> None:
    with celery.connection_for_read() as conn:
        queue = conn.SimpleQueue("stress")
        while not stop.is_set():
            try:
                message = queue.get(timeout=0.2)
            except queue.Empty:
                continue
            except Exception as exc:  # a half-written message surfaces here as a decode error
                errors.append(repr(exc))
                continue
            into.append(message.payload["n"])
            message.ack()


def test_every_message_arrives_whole_and_once_with_two_busy_consumers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=None, database_url=None)
    settings.ensure_dirs()
    celery = make_celery(settings)
    options = settings.broker_transport_options()
    # consumers poll as fast as they can: the race, made likely
    celery.conf.broker_transport_options = {**options, "polling_interval": 0}
    received: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    consumers = [threading.Thread(target=_consume, args=(celery, received, errors, stop)) for _ in range(2)]
    for thread in consumers:
        thread.start()
    try:
        with celery.connection_for_write() as conn:
            assert type(conn.transport).__module__ == "app.core.fsqueue"
            queue = conn.SimpleQueue("stress")
            for n in range(MESSAGES):
                queue.put({"n": n})
        wait_for(lambda: len(received) >= MESSAGES, 60, 0.1, "all messages")
    finally:
        stop.set()
        for thread in consumers:
            thread.join(10)
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    messages = Path(options["data_folder_in"])
    assert list(messages.iterdir()) == []  # no partial file left behind either
    assert list(Path(options["processed_folder"]).iterdir()) == []
