"""Database helpers shared by services."""

from django.db import IntegrityError, transaction

from .exceptions import Conflict


def create_or_conflict(model, *, conflict_message: str, **fields):
    """Create a row; a unique-constraint violation (including a lost race) is 409 CONFLICT."""
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError:
        raise Conflict(conflict_message) from None
