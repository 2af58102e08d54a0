"""Members and invitations: listing, inviting, changing and removing the members of the
current organization, and accepting an invitation."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    EmailField,
    ModelSerializer,
    NameField,
    ResponseSerializer,
    Serializer,
)

from ..models import Membership, MembershipStatus, Role
from ..permissions import (
    PERMISSIONS_BY_AREA,
    effective_permissions,
    permissions_as_object,
    unknown_overrides,
)
from .fields import StrictBooleanField

_PERMISSION_OBJECT_HELP = (
    'Permission object: per-area overrides, e.g. {"documents": {"read": true, "delete": false}}, '
    "applied on top of the role's permissions. Areas and actions: "
    + "; ".join(f"{area} ({', '.join(actions)})" for area, actions in PERMISSIONS_BY_AREA.items())
    + "."
)


class PermissionObjectField(serializers.DictField):
    """A permission object as input: known areas and actions, boolean values."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", _PERMISSION_OBJECT_HELP)
        super().__init__(child=serializers.DictField(child=StrictBooleanField()), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        unknown = unknown_overrides(value)
        if unknown:
            raise serializers.ValidationError(
                f"Unknown area or action: {', '.join(unknown)}.", code="invalid"
            )
        return value


_PERMISSIONS_SCHEMA = {
    "type": "object",
    "description": "Permission object: every area, each action true or false.",
    "properties": {
        area: {
            "type": "object",
            "properties": {action: {"type": "boolean"} for action in actions},
            "required": list(actions),
            "additionalProperties": False,
        }
        for area, actions in PERMISSIONS_BY_AREA.items()
    },
    "required": list(PERMISSIONS_BY_AREA),
    "additionalProperties": False,
}


class MemberSerializer(ModelSerializer):
    """A member or pending invitation: `permissions` is what the member may do (role plus
    overrides); `custom_permissions` the overrides themselves."""

    user_id = serializers.UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The member's account; null while the invitation is pending.",
    )
    email = EmailField(read_only=True)
    name = serializers.SerializerMethodField()
    permissions = serializers.SerializerMethodField()
    custom_permissions = serializers.DictField(
        source="permissions",
        child=serializers.DictField(child=serializers.BooleanField()),
        read_only=True,
        help_text="The per-area overrides set on this member, as a permission object.",
    )
    last_active = serializers.DateTimeField(
        source="user.last_login",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The member's last login; null for a pending invitation.",
    )
    invited_by = serializers.UUIDField(
        source="invited_by_id", read_only=True, allow_null=True, help_text="The inviter's user id."
    )
    invitation_expires_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="When the pending invitation expires (status `invited`), else null.",
    )

    class Meta:
        model = Membership
        fields = [
            "id",
            "user_id",
            "email",
            "name",
            "role",
            "status",
            "permissions",
            "custom_permissions",
            "invited_at",
            "joined_at",
            "last_active",
            "invited_by",
            "invitation_expires_at",
        ]
        read_only_fields = fields

    def to_representation(self, membership):
        data = super().to_representation(membership)
        if membership.status == MembershipStatus.INVITED:
            # A pending invitation shows what the inviter typed, nothing of the account the
            # address may already have: inviting must not reveal who has an account here.
            data.update(user_id=None, email=membership.invited_email, name="", last_active=None)
        return data

    def get_name(self, membership) -> str:
        return membership.user.name if membership.user_id else ""

    @extend_schema_field(_PERMISSIONS_SCHEMA)
    def get_permissions(self, membership) -> dict:
        return permissions_as_object(effective_permissions(membership.role, membership.permissions))


class MemberInviteSerializer(Serializer):
    email = EmailField(max_length=254)
    role = ChoiceField(choices=Role.choices, default=Role.MEMBER)
    custom_permissions = PermissionObjectField(required=False, default=dict)
    send_email = serializers.BooleanField(
        default=True,
        help_text="Email the accept link (default). When false no email is sent and the link "
        "is shown to nobody: send it later with POST organizations/members/{id}/resend.",
    )


class MemberUpdateSerializer(Serializer):
    """PUT replaces (role and status required; omitted `custom_permissions` clears the
    overrides); PATCH changes what it names."""

    role = ChoiceField(choices=Role.choices)
    status = ChoiceField(
        choices=MembershipStatus.choices,
        help_text="active or suspended; `invited` only as the current status of a pending "
        "invitation (it becomes active by being accepted).",
    )
    custom_permissions = PermissionObjectField(required=False)


def message_fields() -> dict:
    return {"success": True, "timestamp": timezone.now()}


class _MessageSerializer(ResponseSerializer):
    """An acknowledgement: success, message, timestamp."""

    success = serializers.BooleanField()
    message = CharField()
    timestamp = serializers.DateTimeField()


class InvitationSentSerializer(_MessageSerializer):
    member = MemberSerializer()
    expires_at = serializers.DateTimeField(help_text="When the invitation link expires.")
    email_sent = serializers.BooleanField(
        help_text="Whether the accept link was emailed: false when no email was asked for, or "
        "when the mail server did not take it (`message` says which; the invitation stands, and "
        "the resend action sends it again). The link is never part of a response."
    )


# Longer than any token we issue; the accept page drops longer values too.
INVITATION_TOKEN_MAX_LENGTH = 200


class InvitationAcceptSerializer(Serializer):
    token = CharField(max_length=INVITATION_TOKEN_MAX_LENGTH, write_only=True, trim_whitespace=True)
    name = NameField(
        max_length=200,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Required when the invited address has no account yet; otherwise ignored.",
    )
    password = CharField(
        max_length=4096,
        required=False,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Required when the invited address has no account yet (checked by the "
        "password validators); otherwise ignored: the existing account keeps its password.",
    )


class AcceptedOrganizationSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    slug = CharField()
    name = CharField()


class InvitationAcceptedSerializer(_MessageSerializer):
    organization = AcceptedOrganizationSerializer()
    membership_id = serializers.UUIDField()
    user_id = serializers.UUIDField()
    role = ChoiceField(choices=Role.choices)
    account_created = serializers.BooleanField(
        help_text="A new account was created for the invited address; log in with it."
    )
