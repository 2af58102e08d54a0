"""The serializer base classes and text fields every app's serializers use.

- **Strict types.** Text fields take JSON strings only: `123` or `true` for a name is a 400, not
  the string "123". Choices likewise.
- **Safe text.** Single-line names refuse control, invisible and bidirectional formatting
  characters; other text refuses control characters but tab and line breaks
  (config.validators).
- **Times in UTC.** Date-times are given as ISO 8601 in UTC (`...Z`), and a time given without
  an offset is read as UTC, whatever timezone is active (`FieldsMadeOnceMixin`).
- **Nothing ignored.** A request body naming a field the serializer does not write (a
  read-only field such as `status`, or a misspelt one) is a 400 naming each such key, rather
  than a 200 that silently changed nothing.

`tests/api/test_serializer_rules.py` walks every serializer of the project and fails on one
that does not derive from these bases or declares a text field that is not strict.
"""

import copy
import datetime
import functools
import json
from collections.abc import Mapping

import pycountry
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .validators import (
    DESCRIPTION_MAX_LENGTH,
    validate_domain,
    validate_name,
    validate_phone,
    validate_text,
)

# Keys that HTML forms (the browsable API in development) add to a body.
_FORM_KEYS = frozenset({"csrfmiddlewaretoken"})


class StrictTextMixin:
    """A JSON string, or a 400: no number or boolean is turned into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.", code="invalid")
        return super().to_internal_value(data)


class CharField(StrictTextMixin, serializers.CharField):
    """Free text: line breaks and tabs allowed, other control characters refused."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators.append(validate_text)


def plain_text(value, max_length: int, blank: bool) -> str | None:
    """For a validation fast path: `value` as a CharField (`max_length`, `allow_blank=blank`)
    gives it when it is plainly valid text, None otherwise (the field's to judge).
    str.isprintable() refuses every control, format, separator (but the space), surrogate and
    unassigned character: stricter than the text rule, so None never hides a value the field
    would refuse."""
    if type(value) is not str or not value.isprintable():
        return None
    value = value.strip()  # as the field trims
    if len(value) > max_length or not (value or blank):
        return None
    return value


class NameField(StrictTextMixin, serializers.CharField):
    """A one-line name shown to people: no control, invisible or bidi-override characters."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 200)
        super().__init__(**kwargs)
        self.validators.append(validate_name)


class DescriptionField(CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", DESCRIPTION_MAX_LENGTH)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


class DomainField(StrictTextMixin, serializers.CharField):
    """A host name such as `acme.example.com` (no scheme, path or port); stored lowercase."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 253)
        super().__init__(**kwargs)
        self.validators.append(validate_domain)

    def to_internal_value(self, data):
        return super().to_internal_value(data).lower()


class PhoneField(StrictTextMixin, serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)
        self.validators.append(validate_phone)


class EmailField(StrictTextMixin, serializers.EmailField):
    pass


class SlugField(StrictTextMixin, serializers.SlugField):
    pass


class URLField(StrictTextMixin, serializers.URLField):
    pass


class ChoiceField(StrictTextMixin, serializers.ChoiceField):
    pass


class RefusesUnwritableFieldsMixin:
    """A body key that is not a writable field is a 400 naming it, together with the other
    fields' errors. Two exceptions keep read-modify-write working (a GET document PUT back
    whole, changed where the client means to change it):

    - a read-only field sent back with the value it has now asks for no change: accepted;
    - `live_fields`, figures the server keeps moving (usage counters, `updated_at`), differ
      from what the client read as soon as anyone else makes a request: sent back, they are
      ignored, whatever their value.

    The current values are this serializer's representation of its instance, or
    `context["representation"]` (a dict, or a callable returning one) when another
    serializer shows the instance."""

    live_fields: tuple[str, ...] = ()

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)
        errors = self._unwritable_errors(data)
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def _unwritable_errors(self, data: Mapping) -> dict:
        writable = [name for name, field in self.fields.items() if not field.read_only]
        sent = [key for key in data if key not in writable and key not in _FORM_KEYS]
        if not sent:
            return {}
        current = self._current_representation()
        errors = {}
        for key in sent:
            if key in current and (key in self.live_fields or data[key] == current[key]):
                continue
            if key in self.fields or key in current:
                errors[key] = ["This field is read-only."]
            else:
                allowed = ", ".join(writable) or "none"
                errors[key] = [f"Unknown field. Writable fields: {allowed}."]
        return errors

    def _current_representation(self) -> Mapping:
        given = self.context.get("representation")
        if callable(given):
            given = given()
        if given is not None:
            return given
        if getattr(self, "instance", None) is None:
            return {}
        return self.to_representation(self.instance)


class _FieldCopier:
    """Copies of one unbound field, each its own, as `copy.deepcopy` makes them, faster.

    DRF copies a field by making it again from the arguments it was made with (about 40 µs a
    field, a millisecond for a large serializer). A field that holds no other field is copied
    here by its attributes instead: the same values, with its own lists, dicts and sets (its
    error messages, validators, choices), and its own copy of a mutable default or initial
    value, so a change to one serializer's field stays in it. A field holding others (a nested
    serializer, a list or dict field's child, a many-related field's child relation) binds
    them to itself when made, so it is still copied DRF's way."""

    _DEEP = frozenset({"default", "initial"})

    def __init__(self, field: serializers.Field):
        self.field = field
        state = field.__dict__
        self.by_attributes = not isinstance(field, serializers.BaseSerializer) and not any(
            isinstance(value, serializers.Field) for value in state.values()
        )
        self.containers = tuple(
            key
            for key, value in state.items()
            if isinstance(value, dict | list | set) and key not in ("_args", "_kwargs")
        )

    def copy(self) -> serializers.Field:
        if not self.by_attributes:
            return copy.deepcopy(self.field)
        clone = object.__new__(type(self.field))
        state = clone.__dict__
        state.update(self.field.__dict__)
        for key in self.containers:
            value = state[key]
            if key in self._DEEP:
                state[key] = copy.deepcopy(value)
            elif type(value) in _PLAIN_CONTAINERS:
                state[key] = value.copy()  # what copy.copy does for these, without its dispatch
            else:
                state[key] = copy.copy(value)
        return clone


_PLAIN_CONTAINERS = frozenset({dict, list, set})


def _in_utc(field: serializers.Field) -> None:
    """A date-time field (or a list or dict field's date-time child) without a timezone of its
    own reads and gives its values in UTC."""
    for candidate in (field, getattr(field, "child", None)):
        if isinstance(candidate, serializers.DateTimeField) and not hasattr(candidate, "timezone"):
            candidate.timezone = datetime.UTC
            # What DRF makes a copy again from (a list or dict field's copy copies its child so).
            candidate._kwargs["default_timezone"] = datetime.UTC


class FieldsMadeOnceMixin:
    """A serializer's fields made once per class, each serializer getting copies.

    DRF makes a serializer's fields every time one is made: a model serializer's from the
    model's metadata, walking every relation of the model (an organization has one from nearly
    every table: most of what a read endpoint spent serializing), a plain one by copying its
    declared fields DRF's way (most of what validating a chat completion's body cost). Both
    depend on the class alone (its declarations and Meta), so they are made once per class and
    each serializer gets copies (`_FieldCopier`). A subclass that adapts its fields per request
    does it in its own get_fields, on those.

    Date-time fields are given UTC as their timezone (DRF's `default_timezone`) unless they
    name one: the API's times are UTC, which is Django's only timezone here (TIME_ZONE, and
    none is ever activated), and DRF otherwise looks the active one up for every value it
    reads or gives (8.7 µs against 2.5 µs a value: a page of audit events gives a hundred)."""

    def get_fields(self):
        copiers = type(self).__dict__.get("_field_copiers")
        if copiers is None:
            fields = super().get_fields()
            for field in fields.values():
                _in_utc(field)
            copiers = [(name, _FieldCopier(field)) for name, field in fields.items()]
            # Set on this class only: a subclass makes (and keeps) its own.
            type(self)._field_copiers = copiers
        return {name: copier.copy() for name, copier in copiers}


class Serializer(FieldsMadeOnceMixin, RefusesUnwritableFieldsMixin, serializers.Serializer):
    """Base of every request and response serializer."""


class ResponseSerializer(Serializer):
    """A response shape, never parsed from a request: every field is read-only, so nothing
    built on it can become a way to write a field by accident."""

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            field.read_only = True
        return fields


class PersonSerializer(ResponseSerializer):
    """A user as other records name them (who created, approved or is assigned something)."""

    id = serializers.UUIDField()
    email = serializers.EmailField()
    full_name = serializers.CharField(source="name")


class JSONObjectField(serializers.DictField):
    """A JSON object (any values) of at most `max_bytes` once encoded."""

    def __init__(self, *, max_bytes: int, **kwargs):
        self.max_bytes = max_bytes
        kwargs.setdefault("help_text", f"A JSON object, at most {max_bytes} bytes.")
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        refuse_nul(value)
        if len(json.dumps(value, ensure_ascii=False).encode()) > self.max_bytes:
            raise serializers.ValidationError(f"At most {self.max_bytes} bytes of JSON.")
        return value


# A UUID as the API writes it (for the schema of fields that take one among other values).
UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def refuse_nul(value) -> None:
    """PostgreSQL's jsonb (and text) cannot hold U+0000: a JSON object carrying one in a key or
    a string is refused by name here, rather than by the database's error."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise serializers.ValidationError("Keys may not contain U+0000 (NUL).")
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise serializers.ValidationError("Strings may not contain U+0000 (NUL).")


class ListedField(CharField):
    """Text that is one of a list a service checks (with its own messages); the schema lists
    them (its `enum`, on requests: tenants.schema). `codes` returns the list; it is called when
    the schema is built, not at import."""

    def __init__(self, *, codes, **kwargs):
        self.request_codes = codes
        super().__init__(**kwargs)


@functools.cache
def currency_codes() -> frozenset[str]:
    return frozenset(currency.alpha_3 for currency in pycountry.currencies)


@functools.cache
def country_codes() -> frozenset[str]:
    return frozenset(country.alpha_2 for country in pycountry.countries)


class CodeField(ListedField):
    """One code of a standard list, given in any case and stored upper-cased; checked here. A
    subclass names the list (`codes`, a function), the codes' `length`, the refusal's
    `message` and the default `help_text`."""

    codes = staticmethod(frozenset)
    length = 0
    message = ""
    default_help = ""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", self.default_help)
        super().__init__(codes=self.codes, min_length=self.length, max_length=self.length, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data).upper()
        if value not in self.request_codes():
            raise serializers.ValidationError(self.message, code="invalid_choice")
        return value


class CurrencyField(CodeField):
    """An ISO 4217 code, upper-cased ("usd" is USD)."""

    codes = staticmethod(currency_codes)
    length = 3
    message = "Not an ISO 4217 currency code."
    default_help = "ISO 4217."


class CountryField(CodeField):
    """An ISO 3166-1 alpha-2 code, upper-cased ("de" is DE)."""

    codes = staticmethod(country_codes)
    length = 2
    message = "Not an ISO 3166-1 alpha-2 country code."
    default_help = "ISO 3166-1 alpha-2."


class DistinctListField(serializers.ListField):
    """A list in which no value appears twice (the schema says `uniqueItems`)."""

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if len(set(map(str, values))) != len(values):
            raise serializers.ValidationError(f"{self.field_name} lists a value twice.")
        return values


@extend_schema_field({"type": "object", "additionalProperties": {}})
class ObjectField(serializers.JSONField):
    """A JSON object whose content its service checks (with its own rules and messages); any
    other JSON value is a 400 here, and the schema says `object`, not "any value"."""

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise serializers.ValidationError("Must be an object.", code="invalid")
        refuse_nul(data)
        return super().to_internal_value(data)


def _whole(serializer_class, data):
    """`data` through a fresh, unbound `serializer_class`: its required fields and defaults
    apply even inside a PATCH (DRF skips them for a partial root's nested serializers), and
    its unknown keys are checked against nothing but its own fields (a bound context's
    `representation` is the root object's)."""
    item = serializer_class(data=data)
    return (dict(item.validated_data), None) if item.is_valid() else (None, item.errors)


class WholeItemsField(serializers.ListField):
    """A list of objects, each validated whole by `child` (a serializer), in PATCH too; too
    many items are refused before any is validated."""

    def run_child_validation(self, data):
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        values, errors = [], {}
        for index, item in enumerate(data):
            value, error = _whole(type(self.child), item)
            if error is not None:
                errors[index] = error
            else:
                values.append(value)
        if errors:
            raise serializers.ValidationError(errors)
        return values


class WholeObjectField(serializers.JSONField):
    """One nested object validated whole by `serializer_class`, in PATCH too (see
    WholeItemsField); documented as that serializer."""

    def __init__(self, serializer_class, **kwargs):
        self.serializer_class = serializer_class
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise serializers.ValidationError("Must be an object.", code="invalid")
        value, error = _whole(self.serializer_class, data)
        if error is not None:
            raise serializers.ValidationError(error)
        return self.serializer_class().to_representation(value)


class QuerySerializer(FieldsMadeOnceMixin, serializers.Serializer):
    """Query parameters: other parameters (filters, pagination, the organization) share the
    query string, so unknown keys are not refused here."""


class ModelSerializer(
    FieldsMadeOnceMixin, RefusesUnwritableFieldsMixin, serializers.ModelSerializer
):
    """Base of every model serializer: model text fields become the strict fields above."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: CharField,
        models.TextField: CharField,
        models.EmailField: EmailField,
        models.SlugField: SlugField,
        models.URLField: URLField,
    }
    serializer_choice_field = ChoiceField
