"""The embedded queue: kombu's filesystem transport, with message and exchange files that appear whole.

kombu's own transport creates a message file, then writes it; a consumer polling the folder can take
the file in between, read it empty and drop it (measured: 196 of 3,000 messages lost with a busy
consumer). In the embedded mode that is a job left `queued` for ever. Here a message is written under
a name no consumer matches and renamed into place (atomic on one filesystem), and a consumer takes a
file by renaming it into the processed folder beside it, so of two consumers exactly one gets it.
The exchange tables (which queue an exchange routes to) are likewise replaced whole, and a binding
reaches the disk before this process's shared state calls it bound (see queue_bind).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "mmguard-fs"
PARTIAL_PREFIX = "partial-"  # never of the form <stamp>.<queue>.msg that _get looks for


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, PARTIAL_PREFIX + name + ".part")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        taken_dir = self.processed_folder
        # a missing folder would make every rename below fail as if another consumer had won
        os.makedirs(taken_dir, exist_ok=True)
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            taken = os.path.join(taken_dir, f"taken-{os.getpid()}-{filename}")
            try:
                os.rename(os.path.join(self.data_folder_in, filename), taken)
            except FileNotFoundError:  # another consumer took it first
                continue
            try:
                with open(taken, "rb") as handle:
                    payload = handle.read()
                if not self.store_processed:
                    os.unlink(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    # The exchange table (which queues an exchange routes to) is a small JSON file that every publish
    # reads. kombu creates it with open("wb") and only then locks and writes it, so a publish in
    # between read it empty and failed (JSONDecodeError), and two first binds could truncate each
    # other's. Here every change takes a lock file, then writes a whole new table and renames it in:
    # a reader sees the old table or the new one, never a partial one.
    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                   arguments: Any = None, **kwargs: Any) -> None:
        # kombu records a binding in the process-wide state first and writes the table after; another
        # thread of the same process (the API's request threads) then skips its own bind and publishes
        # into a table not yet on disk, and the message is dropped. On disk first, then in the state.
        exchange = exchange or "amq.direct"
        # (super()'s own _queue_bind call then finds the entry in place and writes nothing)
        if not self.state.has_binding(queue, exchange, routing_key):
            meta = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments)
            self._queue_bind(exchange, *meta)
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        entry = _table_entry(routing_key, pattern, queue)
        self._update_table(exchange, lambda table: table if entry in table else [entry, *table])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        entry = _table_entry(routing_key, pattern, queue)
        self._update_table(exchange, lambda table: [q for q in table if q != entry])

    def _update_table(self, exchange: str, change: Callable[[list], list]) -> None:
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.part")
        try:
            with open(self.control_folder / ".exchange-tables.lock", "a") as guard:
                filesystem.lock(guard, filesystem.LOCK_EX)
                try:
                    try:
                        table = [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(file.read_bytes()))]
                    except FileNotFoundError:
                        table = []
                    updated = change(table)
                    if updated != table or not file.exists():
                        partial.write_bytes(str_to_bytes(dumps(updated)))
                        os.replace(partial, file)
                finally:
                    filesystem.unlock(guard)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ChannelError(f"Cannot update {file}") from exc


def _table_entry(routing_key: str | None, pattern: str | None, queue: str | None) -> Any:
    return filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make `mmguard-fs://` a broker URL in this process (kombu looks transports up by scheme)."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
