"""The file storage's writes on a volume that cannot take them (config.storage): what fitted
of the file is removed, and the failure is an outage of the storage, which the API answers 503
naming it, with nothing recorded, and which a workflow job waits out (tests/playground/
test_workflows.py). Other failures of a write are raised as they were. A read of a file the
storage does not have is a 404 saying so; one the volume fails, an outage."""

import errno
import logging
import os
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import filesystem, storages
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from audit.models import AuditEvent
from config.exceptions import StorageUnavailable, unavailable_dependency
from support.models import TicketAttachment
from tests.conftest import assert_envelope
from tests.playground.factories import ArtifactFactory
from tests.support.factories import TicketAttachmentFactory, TicketFactory
from tests.support.test_conversation import storage_used, tenant_files, upload

pytestmark = pytest.mark.django_db


class _Volume:
    """The os module as Django's file storage sees it, on a volume with `room` bytes left: a
    write past them writes what fits and fails with ENOSPC, as a full disk's does."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *args, **kwargs):
        return _FillingFile(os.fdopen(fd, *args, **kwargs), self)


class _FillingFile:
    def __init__(self, file, volume: _Volume):
        self.file, self.volume = file, volume

    def write(self, data):
        if len(data) > self.volume.room:
            self.file.write(data[: self.volume.room])
            self.file.flush()
            self.volume.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.volume.room -= len(data)
        return self.file.write(data)

    def close(self):
        self.file.close()


def volume_with_room(monkeypatch, room: int = 4096) -> _Volume:
    """Every file storage's volume, from now to the test's end, with `room` bytes left."""
    volume = _Volume(room)
    monkeypatch.setattr(filesystem, "os", volume)
    return volume


@pytest.fixture
def full_volume(monkeypatch):
    return volume_with_room(monkeypatch)


def files_under(storage) -> list[Path]:
    return [path for path in Path(storage.location).rglob("*") if path.is_file()]


def test_a_write_the_volume_cannot_take_leaves_nothing_and_is_an_outage(full_volume):
    storage = storages["attachments"]
    before = files_under(storage)

    with pytest.raises(StorageUnavailable) as failed:
        storage.save("volume-test/full", ContentFile(b"x" * 10_000))

    assert files_under(storage) == before  # the 4 KiB that fitted were removed
    assert unavailable_dependency(failed.value) == "storage"
    assert isinstance(failed.value, OSError)
    assert failed.value.errno == errno.ENOSPC


def test_a_write_that_fits_is_stored_whole(full_volume):
    full_volume.room = 20_000
    storage = storages["attachments"]

    name = storage.save("volume-test/fits", ContentFile(b"y" * 10_000))

    try:
        with storage.open(name, "rb") as stored:
            assert stored.read() == b"y" * 10_000
    finally:
        storage.delete(name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_volume_out_of_room_is_an_outage_wherever_it_is_met(code):
    # A temporary file (an upload's, a workflow's spool) as much as the storage's own.
    assert unavailable_dependency(OSError(code, os.strerror(code))) == "storage"


def test_a_failure_that_is_not_the_volumes_is_raised_as_it_was():
    # A name longer than the file system allows: the caller's doing, not an outage.
    with pytest.raises(OSError) as failed:
        storages["attachments"].save("n" * 300, ContentFile(b"z"))

    assert not isinstance(failed.value, StorageUnavailable)
    assert failed.value.errno == errno.ENAMETOOLONG
    assert unavailable_dependency(failed.value) is None
    assert unavailable_dependency(OSError(errno.EACCES, "Permission denied")) is None


def test_an_upload_to_a_full_volume_is_a_503_naming_the_storage_and_records_nothing(
    owner, full_volume, caplog
):
    ticket = TicketFactory(tenant=owner.tenant)
    used = storage_used(owner.tenant)

    with caplog.at_level(logging.ERROR, logger="config.exceptions"):
        response = upload(owner.client, ticket, b"meeting notes\n" * 1_000)

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert error["details"]["dependency"] == "storage"
    assert error["message"] == (
        "The service is briefly unavailable: the file storage cannot take files (it is full or "
        "failing). Try again in a few seconds."
    )
    assert response["Retry-After"] == "5"
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert storage_used(owner.tenant) == used
    assert not AuditEvent.objects.filter(
        tenant=owner.tenant, event_type="support.ticket.attachment_added"
    ).exists()
    assert tenant_files(owner.tenant) == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "config.exceptions"]
    assert line.startswith("storage unavailable in TicketViewSet (StorageUnavailable: [Errno 28]")


def test_an_upload_whose_temporary_file_meets_a_full_volume_leaves_no_file(
    owner, monkeypatch, settings, tmp_path
):
    # Past FILE_UPLOAD_MAX_MEMORY_SIZE Django writes an upload to a temporary file as it
    # reads the body; the volume fills up midway.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    receive = TemporaryFileUploadHandler.receive_data_chunk

    def volume_full_after_the_first_chunk(handler, raw_data, start):
        if start > 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return receive(handler, raw_data, start)

    monkeypatch.setattr(
        TemporaryFileUploadHandler, "receive_data_chunk", volume_full_after_the_first_chunk
    )
    ticket = TicketFactory(tenant=owner.tenant)

    response = upload(owner.client, ticket, b"meeting notes\n" * 20_000)  # 280 kB: 5 chunks

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert error["details"]["dependency"] == "storage"
    # Django left the file it was writing open, the upload's first chunk on disk, for as long
    # as anything kept the request.
    assert list(tmp_path.iterdir()) == []
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()


# Reads ------------------------------------------------------------------------------------------


def missing_artifact(owner):
    artifact = ArtifactFactory(tenant=owner.tenant)
    storages["artifacts"].delete(artifact.file.name)
    return f"/api/v1/artifacts/{artifact.pk}/download", artifact.file.name, "ArtifactViewSet"


def missing_attachment(owner):
    attachment = TicketAttachmentFactory(tenant=owner.tenant)
    attachment.file.storage.delete(attachment.file.name)
    url = f"/api/v1/support/attachments/{attachment.pk}/download"
    return url, attachment.file.name, "AttachmentViewSet"


@pytest.mark.parametrize("missing", [missing_artifact, missing_attachment])
def test_a_file_missing_from_the_storage_is_a_404_saying_so_and_logged(owner, missing, caplog):
    """A row whose file is not in the storage (a volume restored or mounted without it): the
    download was a 500 (FileNotFoundError); the object itself is still there."""
    url, name, view = missing(owner)

    with caplog.at_level(logging.ERROR, logger="config.exceptions"):
        response = owner.client.get(url)

    error = assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    assert error["message"] == "The file is missing from the storage."
    [line] = [r.getMessage() for r in caplog.records if r.name == "config.exceptions"]
    assert line == f"A stored file is missing in {view}: {name}"
    assert owner.client.get(url.removesuffix("download")).status_code == 200


def test_a_read_the_volume_fails_is_an_outage_of_the_storage(owner, monkeypatch):
    artifact = ArtifactFactory(tenant=owner.tenant)

    def failing_open(path, mode="r", *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(filesystem, "open", failing_open, raising=False)

    response = owner.client.get(f"/api/v1/artifacts/{artifact.pk}/download")

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert error["details"]["dependency"] == "storage"
