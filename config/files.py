"""Files kept in a Django storage beside database rows: removed only once the deletion that
dropped their rows commits, so a rolled-back deletion never loses a file a row still names.
And `Spool`, a file written in pieces before it is stored."""

import hashlib
import logging
import tempfile
from collections.abc import Callable

from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction

logger = logging.getLogger(__name__)


def remove_files_on_commit(storage_alias: str, names: list[str]) -> None:
    """Delete `names` from STORAGES[storage_alias] after the current transaction commits; a
    failure is logged (the rows are gone either way) and never undoes the commit."""
    names = [name for name in names if name]
    if not names:
        return

    def remove():
        storage = storages[storage_alias]
        for name in names:
            try:
                storage.delete(name)
            except OSError:
                logger.exception("Removing %s file %s failed", storage_alias, name)

    transaction.on_commit(remove, robust=True)


# A spool keeps this much in memory, then moves to a temporary file on disk.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024


class Spool:
    """Bytes written in pieces (`write`, text encoded as UTF-8, so a csv.writer can write to
    it) into a temporary file, counted and hashed as they come: in memory up to
    SPOOL_IN_MEMORY_BYTES, then on disk. An export made this way never sits whole in a
    worker's memory, however large it grows.

    Past `limit` bytes, `write` raises what `refuse(size)` returns, at once rather than once
    everything is written (the limit is what the file's destination can take). `file()` is the
    content as a Django File, from its start, for a storage to save; `close()` deletes it."""

    def __init__(
        self, *, limit: int | None = None, refuse: Callable[[int], Exception] | None = None
    ):
        self.limit = limit
        self.refuse = refuse or (lambda size: ValueError(f"{size} bytes: more than {limit}"))
        self.size = 0
        self._hash = hashlib.sha256()
        # Closed by close() (or leaving a `with` block), which also deletes it from disk.
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise self.refuse(self.size)
        self._hash.update(data)
        return self._file.write(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def on_disk(self) -> bool:
        return self._file._rolled

    def file(self) -> File:
        self._file.seek(0)
        content = File(self._file)
        content.size = self.size  # a spooled file has no name to measure it by
        return content

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
