"""Files kept in a Django storage beside database rows: removed only once the deletion that
dropped their rows commits, so a rolled-back deletion never loses a file a row still names."""

import logging

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
