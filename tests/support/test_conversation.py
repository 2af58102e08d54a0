"""A ticket's conversation: comments (public replies and internal notes, the first-response
clock a representative's first public reply stops) and attachments (the type recognised from
the content against the allow-list, the size limit, the `storage` quota, names reduced to a
display name while the stored path is ids only, downloads that a browser never renders,
deletion of one attachment or of its ticket giving the bytes back and removing the files once
that commits), with who may do what and the tenant boundary."""

import hashlib
import io
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from audit.models import AuditEvent
from support.models import Ticket, TicketAttachment, TicketComment, TicketStatus
from support.services import ticket_attachment_add
from tenants.models import QuotaCounter, Role
from tenants.plans import MIB
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

from .factories import RepresentativeFactory, TicketFactory

pytestmark = pytest.mark.django_db

TICKETS = "/api/v1/support/tickets/"
ATTACHMENTS = "/api/v1/support/attachments/"
COMMENT_KEYS = {"id", "comment", "is_internal", "author", "representative_id", "created_at"}
ATTACHMENT_KEYS = {
    "id",
    "name",
    "content_type",
    "size_bytes",
    "sha256",
    "uploaded_by",
    "created_at",
}
STORED_NAME = re.compile(
    r"^support/(?P<tenant>[0-9a-f-]{36})/(?P<ticket>[0-9a-f-]{36})/[0-9a-f]{32}$"
)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (37, 99, 235)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()
PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
TEXT = "Le SSO boucle sur la page de connexion — voir les journaux ci-dessous.\n".encode()


# Helpers -----------------------------------------------------------------------------------------


def detail(ticket) -> str:
    return f"{TICKETS}{ticket.pk}/"


def comments_url(ticket) -> str:
    return f"{TICKETS}{ticket.pk}/comments/"


def upload_url(ticket) -> str:
    return f"{TICKETS}{ticket.pk}/attachments/"


def attachment_url(attachment_id) -> str:
    return f"{ATTACHMENTS}{attachment_id}/"


def download_url(attachment_id) -> str:
    return f"{ATTACHMENTS}{attachment_id}/download/"


def upload(client, ticket, data: bytes, name: str = "notes.txt", content_type: str = "text/plain"):
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post(upload_url(ticket), {"file": file}, format="multipart")


def raw_upload(client, ticket, data: bytes, filename: str):
    """A multipart body written by hand, so the file name reaches the server exactly as given
    (the test client keeps only its base name)."""
    boundary = "----conversation-test-boundary"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode("latin-1")
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return client.post(
        upload_url(ticket), body, content_type=f"multipart/form-data; boundary={boundary}"
    )


def comment(client, ticket, text: str = "We are looking into it.", **extra):
    return client.post(comments_url(ticket), {"comment": text, **extra}, format="json")


def closed_ticket(tenant) -> Ticket:
    now = datetime.now(UTC)
    return TicketFactory(tenant=tenant, status=TicketStatus.CLOSED, resolved_at=now, closed_at=now)


def storage():
    return TicketAttachment._meta.get_field("file").storage


def tenant_files(tenant) -> list[str]:
    """The attachment files stored for `tenant`, relative to the storage root."""
    root = Path(storage().location)
    folder = root / "support" / str(tenant.pk)
    return sorted(str(path.relative_to(root)) for path in folder.rglob("*") if path.is_file())


def storage_used(tenant) -> int:
    used = (
        QuotaCounter.objects.filter(tenant=tenant, resource="storage")
        .values_list("used", flat=True)
        .first()
    )
    return used or 0


def set_storage_used(tenant, used: int) -> None:
    QuotaCounter.objects.update_or_create(
        tenant=tenant, resource="storage", defaults={"used": used}
    )


def events(tenant, event_type):
    return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


def person(user) -> dict:
    return {"id": str(user.pk), "email": user.email, "full_name": user.name}


def first_responded_at(ticket):
    return Ticket.objects.values_list("first_responded_at", flat=True).get(pk=ticket.pk)


def downloaded(response) -> bytes:
    # The test client's wrapper closes the file once the content is read (closing the
    # response again here would fire request_finished and close the test's connection).
    return b"".join(response.streaming_content)


# Comments ----------------------------------------------------------------------------------------


def test_a_comment_is_added_with_its_author(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    response = comment(owner.client, ticket, "Could you send the SAML response?", is_internal=False)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == COMMENT_KEYS
    assert body["comment"] == "Could you send the SAML response?"
    assert body["is_internal"] is False
    assert body["author"] == person(owner.user)
    assert body["representative_id"] is None
    saved = TicketComment.objects.get(pk=body["id"])
    assert (saved.ticket_id, saved.tenant_id, saved.author_id) == (
        ticket.pk,
        owner.tenant.pk,
        owner.user.pk,
    )


def test_is_internal_defaults_to_false_and_tabs_and_line_breaks_are_kept(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    text = "Steps:\n\t1. sign in\r\n\t2. loop"

    response = owner.client.post(comments_url(ticket), {"comment": text}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["is_internal"] is False
    assert TicketComment.objects.get(pk=response.json()["id"]).comment == text


def test_comments_are_listed_oldest_first_in_the_paginated_envelope(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    other = TicketFactory(tenant=owner.tenant)
    posted = [comment(owner.client, ticket, f"Reply {n}").json()["id"] for n in range(3)]
    comment(owner.client, other, "Elsewhere")

    listed = owner.client.get(comments_url(ticket))
    first_page = owner.client.get(comments_url(ticket), {"page_size": 2})

    assert listed.status_code == 200, listed.content
    body = listed.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert body["next"] is None
    assert [row["id"] for row in body["results"]] == posted
    assert [row["comment"] for row in body["results"]] == ["Reply 0", "Reply 1", "Reply 2"]
    assert all(set(row) == COMMENT_KEYS for row in body["results"])
    assert [row["id"] for row in first_page.json()["results"]] == posted[:2]
    assert first_page.json()["next"] is not None


def test_the_ticket_detail_includes_its_comments_oldest_first(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    public = comment(owner.client, ticket, "Public reply").json()
    note = comment(owner.client, ticket, "Internal note", is_internal=True).json()

    response = owner.client.get(detail(ticket))

    assert response.status_code == 200, response.content
    assert response.json()["comments"] == [public, note]


def test_a_representatives_first_public_reply_stops_the_first_response_clock(make_caller):
    member = make_caller(Role.MEMBER)
    representative = RepresentativeFactory(tenant=member.tenant, user=member.user)
    ticket = TicketFactory(tenant=member.tenant)

    response = comment(member.client, ticket, "Hello, I'm on it.")

    assert response.status_code == 201, response.content
    assert response.json()["representative_id"] == str(representative.pk)
    created = TicketComment.objects.get(pk=response.json()["id"])
    assert created.representative_id == representative.pk
    assert first_responded_at(ticket) == created.created_at
    [event] = events(member.tenant, "support.ticket.commented")
    assert event.payload["first_response"] is True


def test_an_internal_note_does_not_stop_the_clock_but_a_later_public_reply_does(make_caller):
    member = make_caller(Role.MEMBER)
    RepresentativeFactory(tenant=member.tenant, user=member.user)
    ticket = TicketFactory(tenant=member.tenant)

    note = comment(member.client, ticket, "Customer is on the legacy IdP.", is_internal=True)

    assert note.status_code == 201, note.content
    assert first_responded_at(ticket) is None
    [event] = events(member.tenant, "support.ticket.commented")
    assert event.payload["first_response"] is False

    reply = comment(member.client, ticket, "Could you try again now?")

    assert first_responded_at(ticket) == TicketComment.objects.get(pk=reply.json()["id"]).created_at


def test_a_public_reply_of_a_member_who_is_not_a_representative_does_not_stop_the_clock(
    make_caller,
):
    member = make_caller(Role.MEMBER)
    RepresentativeFactory(tenant=member.tenant)  # someone else is a representative
    ticket = TicketFactory(tenant=member.tenant)

    response = comment(member.client, ticket, "Forwarding to the desk.")

    assert response.status_code == 201, response.content
    assert response.json()["representative_id"] is None
    assert first_responded_at(ticket) is None


def test_only_the_first_public_reply_counts(make_caller):
    member = make_caller(Role.MEMBER)
    RepresentativeFactory(tenant=member.tenant, user=member.user)
    ticket = TicketFactory(tenant=member.tenant)
    first = comment(member.client, ticket, "First reply").json()
    stopped_at = first_responded_at(ticket)

    second = comment(member.client, ticket, "Second reply")

    assert second.status_code == 201, second.content
    assert stopped_at == TicketComment.objects.get(pk=first["id"]).created_at
    assert first_responded_at(ticket) == stopped_at
    payloads = [e.payload for e in events(member.tenant, "support.ticket.commented")]
    assert sorted(p["first_response"] for p in payloads) == [False, True]


def test_a_closed_ticket_takes_no_comment(owner):
    ticket = closed_ticket(owner.tenant)

    response = comment(owner.client, ticket, "Too late")

    assert_envelope(response, 409, "CONFLICT")
    assert not TicketComment.objects.filter(ticket=ticket).exists()
    assert events(owner.tenant, "support.ticket.commented") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "comment"),
        ({"is_internal": True}, "comment"),
        ({"comment": ""}, "comment"),
        ({"comment": "   \n\t "}, "comment"),
        ({"comment": None}, "comment"),
        ({"comment": 42}, "comment"),
        ({"comment": "x" * 20_001}, "comment"),
        ({"comment": "ok", "is_internal": "yes"}, "is_internal"),
        ({"comment": "ok", "is_internal": 1}, "is_internal"),
        ({"comment": "ring\x07ring"}, "comment"),
        ({"comment": "escape \x1b[31m red"}, "comment"),
        ({"comment": "nul \x00 byte"}, "comment"),
        ({"comment": "flipped \u202e txt.exe"}, "comment"),
    ],
    ids=[
        "missing",
        "missing-with-flag",
        "empty",
        "blank",
        "null",
        "number",
        "over-20000",
        "is-internal-yes",
        "is-internal-1",
        "bell",
        "escape",
        "nul",
        "bidi-override",
    ],
)
def test_an_invalid_comment_is_400_naming_the_field_and_adds_nothing(owner, body, field):
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.post(comments_url(ticket), body, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in error["details"], error
    assert not TicketComment.objects.filter(ticket=ticket).exists()
    assert events(owner.tenant, "support.ticket.commented") == []


def test_a_comment_of_exactly_20000_characters_is_accepted(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    response = comment(owner.client, ticket, "y" * 20_000)

    assert response.status_code == 201, response.content
    assert len(TicketComment.objects.get(ticket=ticket).comment) == 20_000


def test_a_viewer_reads_comments_but_cannot_add_one(make_caller):
    viewer = make_caller(Role.VIEWER)
    ticket = TicketFactory(tenant=viewer.tenant)
    TicketComment.objects.create(tenant=viewer.tenant, ticket=ticket, comment="Existing")

    listed = viewer.client.get(comments_url(ticket))
    posted = comment(viewer.client, ticket, "Mine")

    assert listed.status_code == 200, listed.content
    assert [row["comment"] for row in listed.json()["results"]] == ["Existing"]
    assert_envelope(posted, 403, "INSUFFICIENT_PERMISSIONS")
    assert list(TicketComment.objects.filter(ticket=ticket).values_list("comment", flat=True)) == [
        "Existing"
    ]


def test_another_organizations_ticket_is_404_for_listing_and_adding_comments(owner):
    foreign = TicketFactory(tenant=TenantFactory())
    TicketComment.objects.create(tenant=foreign.tenant, ticket=foreign, comment="Secret note")

    listed = owner.client.get(comments_url(foreign))
    posted = comment(owner.client, foreign, "Injected")
    random = owner.client.get(f"{TICKETS}{uuid.uuid4()}/comments/")

    assert_envelope(listed, 404, "RESOURCE_NOT_FOUND")
    assert_envelope(posted, 404, "RESOURCE_NOT_FOUND")
    assert_envelope(random, 404, "RESOURCE_NOT_FOUND")
    assert b"Secret note" not in listed.content
    assert list(TicketComment.objects.filter(ticket=foreign).values_list("comment", flat=True)) == [
        "Secret note"
    ]


def test_a_comment_is_audited_without_its_text(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    secret = "The customer's recovery code is 7F3K-99QX"

    response = comment(owner.client, ticket, secret, is_internal=True)

    [event] = events(owner.tenant, "support.ticket.commented")
    assert event.actor == owner.user
    assert event.payload == {
        "ticket_id": str(ticket.pk),
        "ticket_number": ticket.ticket_number,
        "comment_id": response.json()["id"],
        "is_internal": True,
        "first_response": False,
    }
    dumped = json.dumps(event.payload)
    assert secret not in dumped and "7F3K" not in dumped


# Attachments: accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "declared", "expected"),
    [
        (PNG, "screenshot.png", "image/png", "image/png"),
        (PNG, "notes.txt", "text/plain", "image/png"),  # the content decides, not the name
        (PDF, "invoice.pdf", "application/pdf", "application/pdf"),
        (TEXT, "logs.txt", "text/plain", "text/plain"),
        (TEXT, "report.html", "text/html", "text/plain"),
    ],
    ids=["png", "png-named-txt", "pdf", "utf8-text", "text-named-html"],
)
def test_an_accepted_file_is_stored_under_ids_and_counted_in_the_storage_quota(
    owner, data, name, declared, expected
):
    ticket = TicketFactory(tenant=owner.tenant)
    set_storage_used(owner.tenant, 1_000)

    response = upload(owner.client, ticket, data, name=name, content_type=declared)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == ATTACHMENT_KEYS
    assert body["name"] == name
    assert body["content_type"] == expected
    assert body["size_bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["uploaded_by"] == person(owner.user)
    attachment = TicketAttachment.objects.get(pk=body["id"])
    assert (attachment.tenant_id, attachment.ticket_id) == (owner.tenant.pk, ticket.pk)
    match = STORED_NAME.match(attachment.file.name)
    assert match, attachment.file.name
    assert match["tenant"] == str(owner.tenant.pk) and match["ticket"] == str(ticket.pk)
    assert Path(name).stem not in attachment.file.name
    assert tenant_files(owner.tenant) == [attachment.file.name]
    with attachment.file.open("rb") as stored:
        assert stored.read() == data
    assert storage_used(owner.tenant) == 1_000 + len(data)
    [event] = events(owner.tenant, "support.ticket.attachment_added")
    assert event.payload == {
        "ticket_id": str(ticket.pk),
        "ticket_number": ticket.ticket_number,
        "attachment_id": body["id"],
        "content_type": expected,
        "size_bytes": len(data),
    }
    assert name not in json.dumps(event.payload)


def test_two_files_of_the_same_name_are_stored_apart(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    first = upload(owner.client, ticket, TEXT, name="logs.txt").json()
    second = upload(owner.client, ticket, b"other logs\n", name="logs.txt").json()

    stored = sorted(
        TicketAttachment.objects.filter(pk__in=[first["id"], second["id"]]).values_list(
            "file", flat=True
        )
    )
    assert len(set(stored)) == 2
    assert tenant_files(owner.tenant) == stored
    assert storage_used(owner.tenant) == len(TEXT) + len(b"other logs\n")


# Attachments: refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "declared", "detected"),
    [
        (
            b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 120,
            "invoice.pdf",
            "application/pdf",
            "application/x-msdownload",
        ),
        (b"<!DOCTYPE html><script>alert(1)</script>", "notes.txt", "text/plain", "text/html"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "diagram.svg",
            "image/svg+xml",
            "text/html",
        ),
        (b"Hello\n  <ScRiPt >alert(1)</script>", "hello.txt", "text/plain", "text/html"),
        (
            b"\x13\x37garbage\x00\x00\x01\x02binary\xff" * 8,
            "dump.txt",
            "text/plain",
            "application/octet-stream",
        ),
        (
            "café, en Latin-1".encode("latin-1"),
            "latin1.txt",
            "text/plain",
            "application/octet-stream",
        ),
    ],
    ids=["exe-named-pdf", "html-named-txt", "svg", "script-in-text", "binary-garbage", "not-utf8"],
)
def test_a_file_of_a_type_not_allowed_is_refused_naming_the_detected_type_and_nothing_is_stored(
    owner, data, name, declared, detected
):
    ticket = TicketFactory(tenant=owner.tenant)
    set_storage_used(owner.tenant, 1_000)

    response = upload(owner.client, ticket, data, name=name, content_type=declared)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert detected in error["message"]
    assert error["details"]["content_type"] == detected
    assert detected in error["details"]["file"][0]
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 1_000
    assert events(owner.tenant, "support.ticket.attachment_added") == []


def test_an_empty_file_or_none_at_all_is_400_and_nothing_is_stored(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    empty = upload(owner.client, ticket, b"", name="empty.txt")
    missing = owner.client.post(upload_url(ticket), {"other": "x"}, format="multipart")
    as_json = owner.client.post(upload_url(ticket), {"file": "aGVsbG8="}, format="json")

    for response in (empty, missing):
        error = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert "file" in error["details"], error
    assert_envelope(as_json, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0


def test_a_file_over_the_size_limit_is_413_and_nothing_is_stored(owner, settings):
    settings.SUPPORT_ATTACHMENT_MAX_BYTES = 1024
    ticket = TicketFactory(tenant=owner.tenant)

    response = upload(owner.client, ticket, b"a" * 1025)

    error = assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit_bytes"] == 1024
    assert "file" in error["details"]
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0


def test_a_file_of_exactly_the_size_limit_is_accepted(owner, settings):
    settings.SUPPORT_ATTACHMENT_MAX_BYTES = 1024
    ticket = TicketFactory(tenant=owner.tenant)

    response = upload(owner.client, ticket, b"a" * 1024)

    assert response.status_code == 201, response.content
    assert response.json()["size_bytes"] == 1024
    assert storage_used(owner.tenant) == 1024


def test_a_body_far_over_the_limit_is_refused_before_it_is_parsed(owner, settings, monkeypatch):
    settings.SUPPORT_ATTACHMENT_MAX_BYTES = 1024
    ticket = TicketFactory(tenant=owner.tenant)

    def parse(*args, **kwargs):
        raise AssertionError("the body was parsed")

    monkeypatch.setattr("rest_framework.parsers.MultiPartParser.parse", parse)

    response = upload(owner.client, ticket, b"a" * (1024 + 65 * 1024))

    error = assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"] == {"file": ["At most 1024 bytes."], "limit_bytes": 1024}
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(owner.tenant) == []


def test_an_attachment_over_the_request_body_limit_but_within_its_own_is_accepted(owner):
    # The defaults: attachments (10 MiB) go beyond the general body limit (2.5 MiB).
    assert django_settings.SUPPORT_ATTACHMENT_MAX_BYTES == 10 * MIB
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE < 3 * MIB
    ticket = TicketFactory(tenant=owner.tenant)
    data = b"a log line that repeats\n" * (3 * MIB // 24)

    response = upload(owner.client, ticket, data, name="big.log")

    assert response.status_code == 201, response.content[:300]
    assert response.json()["size_bytes"] == len(data)
    assert storage_used(owner.tenant) == len(data)


def test_the_upload_allowance_is_the_upload_endpoints_only(owner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.SUPPORT_ATTACHMENT_MAX_BYTES = 64 * 1024
    ticket = TicketFactory(tenant=owner.tenant)

    as_comment = owner.client.post(comments_url(ticket), {"comment": "c" * 8192}, format="json")
    as_file = upload(owner.client, ticket, b"f" * 8192)

    assert_envelope(as_comment, 413, "PAYLOAD_TOO_LARGE")
    assert not TicketComment.objects.filter(ticket=ticket).exists()
    assert as_file.status_code == 201, as_file.content


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\win.ini", "win.ini"),
        ("C:\\Users\\ops\\report.txt", "report.txt"),
        ("bell\x07and\x1bescape\x01.txt", "bellandescape.txt"),
    ],
    ids=["dot-dot-slash", "dot-dot-backslash", "windows-path", "control-characters"],
)
def test_a_hostile_file_name_is_cleaned_and_the_file_stays_inside_the_storage(
    owner, filename, expected
):
    ticket = TicketFactory(tenant=owner.tenant)

    response = raw_upload(owner.client, ticket, TEXT, filename)

    assert response.status_code == 201, response.content
    assert response.json()["name"] == expected
    attachment = TicketAttachment.objects.get(pk=response.json()["id"])
    assert attachment.name == expected
    assert STORED_NAME.match(attachment.file.name), attachment.file.name
    root = Path(storage().location).resolve()
    on_disk = Path(storage().path(attachment.file.name)).resolve()
    assert on_disk.is_relative_to(root / "support" / str(owner.tenant.pk) / str(ticket.pk))
    assert on_disk.read_bytes() == TEXT


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\win.ini", "win.ini"),
        ("/srv/app/../x/report.txt", "report.txt"),
        ("logs\x00\x07\x1b.txt", "logs.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("  ..  ", "attachment"),
        ("../..", "attachment"),
        ("", "attachment"),
        ("x" * 300 + ".txt", "x" * 200),
    ],
    ids=[
        "dot-dot-slash",
        "dot-dot-backslash",
        "absolute",
        "control",
        "bidi-override",
        "dots-only",
        "parent-only",
        "empty",
        "too-long",
    ],
)
def test_the_service_keeps_only_a_clean_display_name(owner, name, expected):
    ticket = TicketFactory(tenant=owner.tenant)

    attachment = ticket_attachment_add(
        ticket=ticket, actor=owner.user, file=ContentFile(TEXT, name=name)
    )

    assert attachment.name == expected
    assert STORED_NAME.match(attachment.file.name), attachment.file.name
    assert tenant_files(owner.tenant) == [attachment.file.name]


def test_a_full_storage_quota_is_429_and_nothing_is_stored(make_caller):
    caller = make_caller(Role.OWNER, tenant=TenantFactory(settings={"maxStorageMB": 1}))
    ticket = TicketFactory(tenant=caller.tenant)
    set_storage_used(caller.tenant, MIB - 10)

    response = upload(caller.client, ticket, b"0123456789ABCDEF\n")

    error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
    assert error["details"]["resource"] == "storage"
    assert error["details"]["limit"] == MIB
    assert error["details"]["requested"] == 17
    assert storage_used(caller.tenant) == MIB - 10
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(caller.tenant) == []
    assert events(caller.tenant, "support.ticket.attachment_added") == []


def test_a_file_that_exactly_fills_the_storage_quota_is_accepted(make_caller):
    caller = make_caller(Role.OWNER, tenant=TenantFactory(settings={"maxStorageMB": 1}))
    ticket = TicketFactory(tenant=caller.tenant)
    set_storage_used(caller.tenant, MIB - len(TEXT))

    response = upload(caller.client, ticket, TEXT)

    assert response.status_code == 201, response.content
    assert storage_used(caller.tenant) == MIB


def test_a_closed_ticket_takes_no_attachment(owner):
    ticket = closed_ticket(owner.tenant)

    response = upload(owner.client, ticket, TEXT)

    assert_envelope(response, 409, "CONFLICT")
    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert tenant_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0


def test_a_failure_after_the_file_is_written_leaves_no_file(owner, monkeypatch):
    ticket = TicketFactory(tenant=owner.tenant)

    def failing_record(**kwargs):
        raise RuntimeError("the audit chain is unavailable")

    monkeypatch.setattr("support.services.conversation.record", failing_record)

    with pytest.raises(RuntimeError):
        ticket_attachment_add(ticket=ticket, actor=owner.user, file=ContentFile(TEXT, name="a.txt"))

    assert not TicketAttachment.objects.filter(ticket=ticket).exists()
    assert storage_used(owner.tenant) == 0
    assert tenant_files(owner.tenant) == []


# Attachments: download, list, who may do what ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (PNG, "screen shot.png", "image/png"),
        (PDF, "invoice.pdf", "application/pdf"),
        (TEXT, "page.html", "text/plain"),
    ],
    ids=["png", "pdf", "text-named-html"],
)
def test_a_download_is_the_exact_bytes_as_an_attachment_never_rendered(
    owner, data, name, content_type
):
    ticket = TicketFactory(tenant=owner.tenant)
    attachment_id = upload(owner.client, ticket, data, name=name, content_type="text/html").json()[
        "id"
    ]

    response = owner.client.get(download_url(attachment_id))

    assert response.status_code == 200
    assert downloaded(response) == data
    assert response["Content-Type"] == content_type
    assert not response["Content-Type"].startswith("text/html")
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert response["Content-Length"] == str(len(data))


def test_attachments_are_listed_per_ticket_and_shown_in_the_ticket_detail(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    other = TicketFactory(tenant=owner.tenant)
    mine = [
        upload(owner.client, ticket, PNG, name="a.png", content_type="image/png").json(),
        upload(owner.client, ticket, TEXT, name="b.txt").json(),
    ]
    theirs = upload(owner.client, other, PDF, name="c.pdf", content_type="application/pdf").json()

    filtered = owner.client.get(ATTACHMENTS, {"ticket": str(ticket.pk)})
    everything = owner.client.get(ATTACHMENTS)
    shown = owner.client.get(detail(ticket))

    assert filtered.status_code == 200, filtered.content
    assert filtered.json()["count"] == 2
    assert filtered.json()["results"] == mine
    assert {row["id"] for row in everything.json()["results"]} == {
        mine[0]["id"],
        mine[1]["id"],
        theirs["id"],
    }
    assert shown.json()["attachments"] == mine
    assert owner.client.get(attachment_url(mine[1]["id"])).json() == mine[1]


def test_the_list_shows_no_other_organizations_attachments(owner):
    foreign_ticket = TicketFactory(tenant=TenantFactory())
    ticket_attachment_add(
        ticket=foreign_ticket, actor=None, file=ContentFile(TEXT, name="theirs.txt")
    )

    everything = owner.client.get(ATTACHMENTS)
    filtered = owner.client.get(ATTACHMENTS, {"ticket": str(foreign_ticket.pk)})

    assert everything.status_code == 200, everything.content
    assert everything.json()["count"] == 0
    assert filtered.json()["count"] == 0


def test_another_organizations_attachment_is_404_and_left_alone(owner):
    foreign_ticket = TicketFactory(tenant=TenantFactory())
    foreign = ticket_attachment_add(
        ticket=foreign_ticket, actor=None, file=ContentFile(TEXT, name="theirs.txt")
    )
    used = storage_used(foreign_ticket.tenant)

    answers = [
        owner.client.get(attachment_url(foreign.pk)),
        owner.client.get(download_url(foreign.pk)),
        owner.client.delete(attachment_url(foreign.pk)),
        upload(owner.client, foreign_ticket, TEXT),
        owner.client.get(attachment_url(uuid.uuid4())),
    ]

    for response in answers:
        assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    assert all(TEXT not in response.content for response in answers)
    assert TicketAttachment.objects.filter(ticket=foreign_ticket).count() == 1
    assert tenant_files(foreign_ticket.tenant) == [foreign.file.name]
    assert storage_used(foreign_ticket.tenant) == used == len(TEXT)
    assert tenant_files(owner.tenant) == []


def test_a_viewer_downloads_but_cannot_upload_or_delete(make_caller):
    viewer = make_caller(Role.VIEWER)
    ticket = TicketFactory(tenant=viewer.tenant)
    attachment = ticket_attachment_add(
        ticket=ticket, actor=None, file=ContentFile(TEXT, name="logs.txt")
    )

    listed = viewer.client.get(ATTACHMENTS, {"ticket": str(ticket.pk)})
    shown = viewer.client.get(attachment_url(attachment.pk))
    fetched = viewer.client.get(download_url(attachment.pk))
    uploaded = upload(viewer.client, ticket, b"mine\n")
    deleted = viewer.client.delete(attachment_url(attachment.pk))

    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert shown.status_code == 200, shown.content
    assert fetched.status_code == 200
    assert downloaded(fetched) == TEXT
    assert_envelope(uploaded, 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(deleted, 403, "INSUFFICIENT_PERMISSIONS")
    assert list(TicketAttachment.objects.filter(ticket=ticket)) == [attachment]
    assert tenant_files(viewer.tenant) == [attachment.file.name]
    assert storage_used(viewer.tenant) == len(TEXT)


# Attachments: deletion ---------------------------------------------------------------------------


def test_deleting_an_attachment_frees_its_bytes_and_removes_the_file_after_commit(
    owner, django_capture_on_commit_callbacks
):
    ticket = TicketFactory(tenant=owner.tenant)
    kept = upload(owner.client, ticket, TEXT, name="kept.txt").json()
    gone = upload(owner.client, ticket, PDF, name="gone.pdf", content_type="application/pdf")
    gone = gone.json()
    gone_file = TicketAttachment.objects.get(pk=gone["id"]).file.name
    assert storage_used(owner.tenant) == len(TEXT) + len(PDF)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.delete(attachment_url(gone["id"]))

    assert response.status_code == 204, response.content
    assert not TicketAttachment.objects.filter(pk=gone["id"]).exists()
    assert storage_used(owner.tenant) == len(TEXT)
    assert not storage().exists(gone_file)
    assert tenant_files(owner.tenant) == [TicketAttachment.objects.get(pk=kept["id"]).file.name]
    [event] = events(owner.tenant, "support.ticket.attachment_deleted")
    assert event.actor == owner.user
    assert event.payload == {
        "ticket_id": str(ticket.pk),
        "ticket_number": ticket.ticket_number,
        "attachment_id": gone["id"],
        "size_bytes": len(PDF),
    }
    assert_envelope(owner.client.get(attachment_url(gone["id"])), 404, "RESOURCE_NOT_FOUND")


def test_the_file_stays_until_the_deletion_commits(owner, django_capture_on_commit_callbacks):
    ticket = TicketFactory(tenant=owner.tenant)
    attachment_id = upload(owner.client, ticket, TEXT).json()["id"]
    name = TicketAttachment.objects.get(pk=attachment_id).file.name

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner.client.delete(attachment_url(attachment_id))

    assert response.status_code == 204, response.content
    assert storage().exists(name)  # not committed yet: a rollback would still need it
    for callback in callbacks:
        callback()
    assert not storage().exists(name)


def test_deleting_a_ticket_frees_all_its_attachments(owner, django_capture_on_commit_callbacks):
    ticket = TicketFactory(tenant=owner.tenant)
    other = TicketFactory(tenant=owner.tenant)
    upload(owner.client, ticket, PNG, name="a.png", content_type="image/png")
    upload(owner.client, ticket, TEXT, name="b.txt")
    survivor = upload(owner.client, other, PDF, name="c.pdf", content_type="application/pdf")
    survivor_file = TicketAttachment.objects.get(pk=survivor.json()["id"]).file.name
    assert storage_used(owner.tenant) == len(PNG) + len(TEXT) + len(PDF)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.delete(detail(ticket))

    assert response.status_code == 204, response.content
    assert not Ticket.objects.filter(pk=ticket.pk).exists()
    assert not TicketAttachment.objects.filter(ticket_id=ticket.pk).exists()
    assert storage_used(owner.tenant) == len(PDF)
    assert tenant_files(owner.tenant) == [survivor_file]
    assert events(owner.tenant, "support.ticket.deleted")
