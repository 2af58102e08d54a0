"""Database helpers shared by services."""

import uuid

from django.db import IntegrityError, connection, transaction

from .exceptions import Conflict


def create_or_conflict(
    model, *, conflict_message: str, conflict_details: dict | None = None, **fields
):
    """Create a row; a unique-constraint violation (including a lost race) is 409 CONFLICT."""
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError:
        raise Conflict(conflict_message, details=conflict_details) from None


def raw_uuid(value: uuid.UUID):
    """A UUID as a parameter of raw SQL, which bypasses the field's conversion: PostgreSQL
    takes the UUID, SQLite stores it as 32 hex characters."""
    return value if connection.vendor == "postgresql" else value.hex
