"""The platform's file storage: Django's FileSystemStorage, with a write that fails cleanly
and a read that says what failed.

Django's storage leaves what it wrote of a file that failed midway (a full disk, a quota, a
read-only or failing volume) where it was, under a name no row points at, and raises the bare
OSError, which the API answered as a 500. Here the partial file is removed, and the failure is
raised as StorageUnavailable: an outage of the storage, which the API answers 503 with the
part named (config.exceptions) and a workflow job waits out like any other outage, rather than
failing for good.

Opening a file the storage does not have (a volume restored or mounted without it) raised the
bare FileNotFoundError, a 500 too: it is StoredFileMissing now, a 404 saying the file is
missing, logged for the operator; a read the volume itself fails is StorageUnavailable."""

import errno
import logging
import os

from django.core.files.storage import FileSystemStorage as DjangoFileSystemStorage

from .exceptions import VOLUME_FULL_ERRNOS, StorageUnavailable, StoredFileMissing, one_line

logger = logging.getLogger(__name__)

# The volume's failures, not the caller's: no room, no quota left, read-only; and for the
# storage's own volume, failing or not ours to write.
_VOLUME_ERRORS = VOLUME_FULL_ERRNOS | {errno.EIO, errno.EACCES, errno.EPERM}


class FileSystemStorage(DjangoFileSystemStorage):
    def _save(self, name, content):
        full_path = self.path(name)
        existed = os.path.lexists(full_path)
        try:
            return super()._save(name, content)
        except OSError as error:
            if isinstance(error, FileExistsError) or error.errno not in _VOLUME_ERRORS:
                raise
            # Names are random (upload_to), so a file at this path that was not there before
            # is this write's own, partial.
            if not existed and os.path.lexists(full_path):
                try:
                    os.remove(full_path)
                except OSError as cleanup:
                    logger.warning("Could not remove a partial file: %s", one_line(cleanup))
            raise _outage(error) from error

    def _open(self, name, mode="rb"):
        try:
            return super()._open(name, mode)
        except FileNotFoundError as error:
            raise StoredFileMissing(errno.ENOENT, "The stored file is missing", name) from error
        except OSError as error:
            if error.errno not in _VOLUME_ERRORS:
                raise
            raise _outage(error) from error


def _outage(error: OSError) -> StorageUnavailable:
    return StorageUnavailable(error.errno, os.strerror(error.errno))
