"""config.serializers' bases make a class's fields once and give each serializer copies: the
fields are DRF's own (same names, same kinds, same options), never shared between two
serializers, and a serializer that adapts its fields per request still does. Their date-times
are read and given in UTC."""

import datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from rest_framework import serializers

from config import serializers as base
from tenants.serializers.organizations import OrganizationSerializer
from tests.project import import_project_modules, is_project_code, subclasses

import_project_modules()
MODEL_SERIALIZERS = sorted(
    (
        cls
        for cls in subclasses(base.ModelSerializer)
        if is_project_code(cls) and getattr(getattr(cls, "Meta", None), "model", None)
    ),
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


PLAIN_SERIALIZERS = sorted(
    (
        cls
        for cls in subclasses(serializers.Serializer)
        if is_project_code(cls)
        and issubclass(cls, base.FieldsMadeOnceMixin)
        and not issubclass(cls, serializers.ModelSerializer)
    ),
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


def _described(fields) -> dict:
    return {
        name: (type(field), field.read_only, field.required, getattr(field, "max_length", None))
        for name, field in fields.items()
    }


@pytest.mark.parametrize("serializer_class", MODEL_SERIALIZERS, ids=lambda cls: cls.__qualname__)
def test_the_fields_are_the_ones_drf_builds(serializer_class):
    built_once = base.ModelSerializer.get_fields(serializer_class())
    built_by_drf = serializers.ModelSerializer.get_fields(serializer_class())

    assert _described(built_once) == _described(built_by_drf)


def test_the_plain_serializers_checked_below_are_the_projects():
    from playground.serializers import ChatCompletionSerializer

    assert len(PLAIN_SERIALIZERS) > 50
    assert ChatCompletionSerializer in PLAIN_SERIALIZERS


@pytest.mark.parametrize("serializer_class", PLAIN_SERIALIZERS, ids=lambda cls: cls.__qualname__)
def test_the_declared_fields_are_the_ones_drf_copies(serializer_class):
    made_once = base.FieldsMadeOnceMixin.get_fields(serializer_class())
    copied_by_drf = serializers.Serializer.get_fields(serializer_class())

    assert _described(made_once) == _described(copied_by_drf)
    for name, field in made_once.items():
        assert field is not serializer_class._declared_fields.get(name)


def test_a_nested_serializers_fields_are_its_own_copies():
    from playground.serializers import ChatCompletionSerializer

    first, second = ChatCompletionSerializer(), ChatCompletionSerializer()
    first_message = first.fields["messages"].child
    second_message = second.fields["messages"].child

    assert first_message is not second_message
    assert first_message.fields["role"] is not second_message.fields["role"]
    assert first_message.fields["role"].parent is first_message


def test_two_serializers_never_share_a_field():
    first, second = OrganizationSerializer(), OrganizationSerializer()

    assert first.fields.keys() == second.fields.keys()
    for name in first.fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second


def test_a_change_to_one_serializers_field_stays_in_it():
    first = OrganizationSerializer()
    first.fields["name"].read_only = True
    first.fields["name"].help_text = "changed here only"

    second = OrganizationSerializer()

    assert second.fields["name"].help_text != "changed here only"


def test_a_subclass_builds_its_own_fields():
    class Narrower(OrganizationSerializer):
        class Meta(OrganizationSerializer.Meta):
            fields = ["id", "name"]

    assert "slug" in OrganizationSerializer().fields  # the parent's are built first
    assert set(Narrower().fields) == {"id", "name"}
    assert set(OrganizationSerializer().fields) > {"id", "name", "slug"}


def test_fields_adapted_per_serializer_are_adapted_on_the_copies():
    class PerRequest(OrganizationSerializer):
        def get_fields(self):
            fields = super().get_fields()
            if self.context.get("narrow"):
                fields = {"id": fields["id"]}
            return fields

    assert set(PerRequest(context={"narrow": True}).fields) == {"id"}
    assert "name" in PerRequest().fields


class _Kinds(base.ModelSerializer):
    """A serializer with a field of each kind the copies treat apart."""

    tags = serializers.ListField(child=serializers.CharField(), required=False)
    options = serializers.JSONField(default={"shared": ["no"]})
    owner = OrganizationSerializer(read_only=True)

    class Meta(OrganizationSerializer.Meta):
        fields = ["id", "name", "status", "tags", "options", "owner"]
        read_only_fields = ["id"]


def test_a_fields_containers_are_its_own():
    first, second = _Kinds(), _Kinds()

    first.fields["name"].error_messages["blank"] = "changed here only"
    first.fields["name"].validators.append(lambda value: None)
    first.fields["options"].default["shared"].append("changed")

    assert second.fields["name"].error_messages["blank"] != "changed here only"
    assert len(second.fields["name"].validators) == len(_Kinds().fields["name"].validators)
    assert second.fields["options"].default == {"shared": ["no"]}
    assert first.fields["status"].choices == second.fields["status"].choices


def test_fields_holding_fields_are_copied_with_them():
    first, second = _Kinds(), _Kinds()

    for serializer in (first, second):
        tags, owner = serializer.fields["tags"], serializer.fields["owner"]
        assert tags.child.parent is tags
        assert owner.parent is serializer
        assert owner.fields["name"].parent is owner
    assert first.fields["tags"].child is not second.fields["tags"].child
    assert first.fields["owner"].fields["name"] is not second.fields["owner"].fields["name"]


def test_copies_validate_and_show_as_drfs_do():
    data = {"name": "Acme", "tags": ["a"], "options": {"k": 1}}
    serializer = _Kinds(data=data)

    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["tags"] == ["a"]
    refused = _Kinds(data={"name": "", "tags": "not a list"})
    assert not refused.is_valid()
    assert set(refused.errors) == {"name", "tags"}


# Times in UTC ---------------------------------------------------------------------------------


class _Times(base.Serializer):
    at = serializers.DateTimeField()
    history = serializers.ListField(child=serializers.DateTimeField(), required=False)
    local = serializers.DateTimeField(default_timezone=ZoneInfo("Europe/Paris"), required=False)


def _date_time_fields(serializer):
    for name, field in serializer.fields.items():
        for candidate in (field, getattr(field, "child", None)):
            if isinstance(candidate, serializers.DateTimeField):
                yield name, candidate


@pytest.mark.parametrize(
    "serializer_class",
    MODEL_SERIALIZERS + PLAIN_SERIALIZERS,
    ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)
def test_every_date_time_field_is_in_utc(serializer_class):
    for name, field in _date_time_fields(serializer_class()):
        assert field.timezone is datetime.UTC, name


def test_the_walk_finds_date_time_fields():
    found = [cls for cls in MODEL_SERIALIZERS + PLAIN_SERIALIZERS if any(_date_time_fields(cls()))]

    assert len(found) > 30
    assert OrganizationSerializer in found


def test_times_are_given_in_utc_whatever_timezone_is_active():
    paris = ZoneInfo("Europe/Paris")
    instant = datetime.datetime(2026, 7, 1, 14, 30, 5, 123456, tzinfo=paris)
    value = {"at": instant, "history": [instant, instant.astimezone(datetime.UTC)]}

    with timezone.override(paris):
        given = _Times(value).data
    expected = serializers.DateTimeField(default_timezone=ZoneInfo("UTC")).to_representation(
        instant
    )

    assert given["at"] == expected == "2026-07-01T12:30:05.123456Z"
    assert given["history"] == [expected, expected]


def test_times_read_without_an_offset_are_utc():
    with timezone.override(ZoneInfo("America/New_York")):
        serializer = _Times(
            data={"at": "2026-07-01T12:30:00", "history": ["2026-07-01T14:30:00+02:00"]}
        )
        assert serializer.is_valid(), serializer.errors

    noon_thirty = datetime.datetime(2026, 7, 1, 12, 30, tzinfo=datetime.UTC)
    assert serializer.validated_data["at"] == noon_thirty
    assert serializer.validated_data["at"].tzinfo is datetime.UTC
    assert serializer.validated_data["history"] == [noon_thirty]


def test_a_field_naming_its_timezone_keeps_it():
    serializer = _Times()
    instant = datetime.datetime(2026, 1, 15, 9, 0, tzinfo=datetime.UTC)

    assert serializer.fields["local"].timezone == ZoneInfo("Europe/Paris")
    assert serializer.fields["local"].to_representation(instant) == "2026-01-15T10:00:00+01:00"
