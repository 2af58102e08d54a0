from rest_framework import serializers

from tenants.models import Membership

from .models import User


class TokenObtainSerializer(serializers.Serializer):
    """Seed 002: `username` or `email`, and `password`."""

    username = serializers.CharField(required=False, max_length=254, write_only=True)
    email = serializers.EmailField(required=False, write_only=True)
    password = serializers.CharField(
        max_length=4096, write_only=True, style={"input_type": "password"}
    )

    def validate(self, attrs):
        identifier = attrs.get("email") or attrs.get("username")
        if not identifier:
            raise serializers.ValidationError({"email": ["Provide an email (or username)."]})
        attrs["identifier"] = identifier.strip().lower()
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name", "is_staff", "date_joined"]
        read_only_fields = fields


class MembershipTenantSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="tenant.id")
    slug = serializers.CharField(source="tenant.slug")
    name = serializers.CharField(source="tenant.name")
    status = serializers.CharField(source="tenant.status")


class MyMembershipSerializer(serializers.ModelSerializer):
    tenant = MembershipTenantSerializer(source="*")

    class Meta:
        model = Membership
        fields = ["id", "tenant", "role", "status", "joined_at"]
        read_only_fields = fields


class CurrentTenantSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()


class MeSerializer(serializers.Serializer):
    """The caller, their memberships and their effective permissions in the current tenant."""

    user = UserSerializer()
    memberships = MyMembershipSerializer(many=True)
    tenant = CurrentTenantSerializer(allow_null=True)
    role = serializers.CharField(allow_null=True)
    permissions = serializers.ListField(child=serializers.CharField())
