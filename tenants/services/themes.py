"""Branding: a tenant's theme (colours, logo, custom CSS), one row per tenant, created on first
write. One logo at a time: uploading a file clears the external `logo_url`, and setting
`logo_url` (to a URL, or "" for no logo) drops the uploaded file. Replaced files are deleted
once the transaction has committed, so a rolled-back change never loses the file it kept."""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from audit.services import record
from config.exceptions import ApplicationError

from ..models import Tenant, Theme
from ..theme_assets import (
    ThemeAssetError,
    inspect_logo,
    normalize_color,
    normalize_logo_url,
    validate_custom_css,
)

# The fields theme_update() sets; anything else in `data` is a programming error.
THEME_FIELDS = (
    "name",
    "primary_color",
    "secondary_color",
    "accent_color",
    "logo_url",
    "custom_css",
    "is_active",
)
_NAME_MAX_CHARS = Theme._meta.get_field("name").max_length


def _clean_name(value) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > _NAME_MAX_CHARS:
        raise ThemeAssetError(f"Enter a name of 1 to {_NAME_MAX_CHARS} characters.")
    return text


def _clean_flag(value) -> bool:
    if not isinstance(value, bool):
        raise ThemeAssetError("Must be true or false.")
    return value


_CLEANERS = {
    "name": _clean_name,
    "primary_color": normalize_color,
    "secondary_color": normalize_color,
    "accent_color": normalize_color,
    "logo_url": normalize_logo_url,
    "custom_css": validate_custom_css,
    "is_active": _clean_flag,
}


def _cleaned(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(data) - set(THEME_FIELDS)
    if unknown:
        raise TypeError(f"theme_update() got fields it does not set: {sorted(unknown)}")
    cleaned, errors = {}, {}
    for name, value in data.items():
        try:
            cleaned[name] = _CLEANERS[name](value)
        except ThemeAssetError as error:
            errors[name] = [str(error)]
    if errors:
        raise ApplicationError("The theme is not valid.", details=errors)
    return cleaned


def delete_file_after_commit(name: str) -> None:
    """Remove a stored file once the transaction commits; a storage error is logged, not
    raised, since the rows no longer point at it."""
    storage = default_storage
    transaction.on_commit(lambda: storage.delete(name), robust=True)


def delete_folder_after_commit(storage, folder: str) -> None:
    """Remove every file under `folder` of `storage` once the transaction commits: a deleted
    organization's files that no row points at any more (job artifacts are stored under the
    organization's id). Errors are logged, not raised."""

    def remove(path: str) -> None:
        try:
            folders, files = storage.listdir(path)
        except FileNotFoundError:
            return
        for name in files:
            storage.delete(f"{path}/{name}")
        for name in folders:
            remove(f"{path}/{name}")

    transaction.on_commit(lambda: remove(folder), robust=True)


@transaction.atomic
def theme_update(*, tenant: Tenant, actor, data: Mapping[str, Any]) -> Theme:
    """Set the given theme fields (a subset of THEME_FIELDS), creating the tenant's theme when
    it has none. Values are checked again here (colours normalised to `#rrggbb`, custom CSS
    against the policy), whoever calls. `logo_url` in `data` replaces the logo: any uploaded
    file is dropped. Records `theme.updated` with the names of the fields that changed and
    whether the row was created; a call that changes nothing (writing the defaults to a tenant
    without a theme included) creates nothing and records nothing."""
    cleaned = _cleaned(data)
    # The tenant row first, as every per-tenant change: two first writes cannot both create.
    Tenant.objects.locked(tenant.pk)
    theme = Theme.objects.filter(tenant=tenant).first()
    created = theme is None
    if created:
        # Theme(tenant_id=...), not Theme(tenant=...), which would replace the cached relation.
        theme = Theme(tenant_id=tenant.pk)
    changed = [name for name, value in cleaned.items() if getattr(theme, name) != value]
    for name in changed:
        setattr(theme, name, cleaned[name])
    dropped_file = None
    if "logo_url" in cleaned and theme.logo:
        dropped_file = theme.logo.name
        theme.logo = ""
        changed.append("logo")
    if not changed:
        # Nothing differs (from the defaults, for a tenant without a theme): no row, no event.
        return theme
    theme.save()
    if dropped_file:
        delete_file_after_commit(dropped_file)
    record(
        tenant=tenant,
        event_type="theme.updated",
        actor=actor,
        payload={"changed": sorted(changed), "created": created},
    )
    return theme


def _read_upload(uploaded_file, max_bytes: int) -> bytes:
    if hasattr(uploaded_file, "seek"):
        uploaded_file.seek(0)
    # One byte more than allowed is enough to tell that it is too big; no more is read.
    return uploaded_file.read(max_bytes + 1)


@transaction.atomic
def theme_logo_set(*, tenant: Tenant, actor, uploaded_file) -> Theme:
    """Store an uploaded logo (PNG, JPEG or SVG, recognised by content; SVG sanitised; at most
    THEME_LOGO_MAX_BYTES) as the tenant's logo, replacing the previous file and any external
    `logo_url`. Records `theme.logo_uploaded` with the changed fields, format and size (never
    the file's content or name)."""
    max_bytes = settings.THEME_LOGO_MAX_BYTES
    try:
        logo = inspect_logo(_read_upload(uploaded_file, max_bytes), max_bytes=max_bytes)
    except ThemeAssetError as error:
        raise ApplicationError(str(error), details={"file": [str(error)]}) from None

    # The tenant row first, as theme_update takes it: an update that read the theme before this
    # upload would otherwise write its old logo back over it (and a first write of each at
    # once would insert two rows, one a unique-constraint error).
    Tenant.objects.locked(tenant.pk)
    theme, created = Theme.objects.select_for_update().get_or_create(tenant=tenant)
    replaced_file = theme.logo.name if theme.logo else None
    changed = ["logo"]
    if theme.logo_url:
        theme.logo_url = ""
        changed.append("logo_url")
    theme.logo.save(f"logo.{logo.extension}", ContentFile(logo.content), save=False)
    stored_file = theme.logo.name
    try:
        theme.save()
        record(
            tenant=tenant,
            event_type="theme.logo_uploaded",
            actor=actor,
            payload={
                "changed": sorted(changed),
                "created": created,
                "format": logo.format,
                "size_bytes": len(logo.content),
            },
        )
    except BaseException:
        # The row never pointed at the new file: remove it rather than leave an orphan.
        default_storage.delete(stored_file)
        raise
    if replaced_file:
        delete_file_after_commit(replaced_file)
    return theme
