"""A tenant's theme (name, colours, logo, custom CSS, `is_active`) and its logo upload.

`ThemeSerializer` validates and shows theme fields and needs no request: with one in the
context (`request`), the uploaded logo's URL is absolute. Usage, in a view or elsewhere:

    current = Theme.objects.filter(tenant=tenant).first()
    serializer = ThemeSerializer(current, data=payload, partial=True, context=context)
    serializer.is_valid(raise_exception=True)
    theme = theme_update(tenant=tenant, actor=user, data=serializer.validated_data)
"""

from urllib.parse import urlsplit

from rest_framework import serializers

from config.serializers import CharField, ModelSerializer, NameField, Serializer

from ..models import Theme
from ..theme_assets import (
    CUSTOM_CSS_MAX_CHARS,
    HEX_COLOR_PATTERN,
    LOGO_URL_MAX_CHARS,
    ThemeAssetError,
    normalize_color,
    normalize_logo_url,
    validate_custom_css,
)

# validate_logo_url's answer for "the URL of the logo already shown": leave the logo alone.
_UNCHANGED = object()


class HexColorField(CharField):
    """`#rrggbb` or `#rgb` (any case) in, lowercase `#rrggbb` out."""

    # What a request's schema states (tenants.schema).
    request_pattern = HEX_COLOR_PATTERN

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("help_text", "Hex colour, #rrggbb or #rgb; stored as lowercase #rrggbb.")
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        try:
            return normalize_color(super().to_internal_value(data))
        except ThemeAssetError as error:
            raise serializers.ValidationError(str(error)) from None


class ThemeSerializer(ModelSerializer):
    """A tenant's theme. `logo_url` shows the logo in use (the uploaded file's URL, else the
    external URL); writing it sets an external logo (dropping an uploaded file) or, with "",
    removes the logo, and writing back the URL shown changes nothing. `id` and `updated_at`
    are null while the tenant still has the default theme (never saved)."""

    live_fields = ("updated_at",)

    id = serializers.UUIDField(read_only=True, allow_null=True)
    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    logo_url = CharField(
        required=False,
        allow_blank=True,
        max_length=LOGO_URL_MAX_CHARS,
        help_text=(
            "The logo in use: the uploaded file's URL, else the external http(s) URL. Write a "
            'URL to use an external logo, "" to remove the logo.'
        ),
    )
    name = NameField(max_length=100, required=False)
    primary_color = HexColorField(required=False)
    secondary_color = HexColorField(required=False)
    accent_color = HexColorField(required=False)
    custom_css = CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=CUSTOM_CSS_MAX_CHARS,
        help_text=(
            "Extra CSS appended to the generated stylesheet. Refused: '<', expression(), "
            "javascript:/vbscript: URLs, behavior:, -moz-binding, @import, and url() targets "
            "other than http(s) or relative; CSS escapes and comments are decoded first."
        ),
    )
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Theme
        fields = [
            "id",
            "organization_id",
            "name",
            "logo_url",
            "primary_color",
            "secondary_color",
            "accent_color",
            "custom_css",
            "is_active",
            "updated_at",
        ]

    def to_representation(self, theme):
        data = super().to_representation(theme)
        data["logo_url"] = theme.logo_in_use(self.context.get("request"))
        if theme._state.adding:
            data["id"] = data["updated_at"] = None
        return data

    def validate_logo_url(self, value):
        theme = self.instance
        if (
            value
            and theme is not None
            and theme.logo
            and urlsplit(value).path == urlsplit(theme.logo.url).path
        ):
            return _UNCHANGED
        try:
            return normalize_logo_url(value)
        except ThemeAssetError as error:
            raise serializers.ValidationError(str(error)) from None

    def validate_custom_css(self, value):
        try:
            return validate_custom_css(value)
        except ThemeAssetError as error:
            raise serializers.ValidationError(str(error)) from None

    def validate(self, attrs):
        if attrs.get("logo_url") is _UNCHANGED:
            del attrs["logo_url"]
        return attrs


class ThemeLogoUploadSerializer(Serializer):
    """multipart/form-data with the logo in `file`: PNG, JPEG or SVG, recognised by content."""

    file = serializers.FileField(
        help_text="PNG, JPEG or SVG (sanitised), at most THEME_LOGO_MAX_BYTES (512 KiB default)."
    )
