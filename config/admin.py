"""Admin building blocks shared by the apps."""

import logging
from collections.abc import Callable, Iterable

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.options import TO_FIELD_VAR, IncorrectLookupParameters
from django.contrib.admin.utils import model_ngettext, quote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import smart_split
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ParseError

from .exceptions import ApplicationError
from .filters import SearchFilter, distinct_words
from .parsers import check_json_value

logger = logging.getLogger(__name__)


def apply_each(modeladmin, request, objects: Iterable, change: Callable, label: Callable) -> int:
    """An admin action's loop: `change(obj)` (a service call) for each object. A refusal
    (ApplicationError) is reported for that object, named by `label(obj)`, and the others go
    on. Returns how many changed."""
    done = 0
    for obj in objects:
        try:
            change(obj)
        except ApplicationError as error:
            modeladmin.message_user(request, f"{label(obj)}: {error.message}", messages.ERROR)
        else:
            done += 1
    return done


class JSONField(forms.JSONField):
    """Django's JSON form field with the API's limits (config.parsers): JSON nested past the
    interpreter's recursion limit raised RecursionError while it was read, and again while the
    form was shown back with its error (a 500); and no deeper than API_JSON_MAX_DEPTH, with no
    lone surrogates, as an API body."""

    def to_python(self, value):
        try:
            parsed = super().to_python(value)
            check_json_value(parsed, max_depth=settings.API_JSON_MAX_DEPTH)
        except RecursionError:
            raise forms.ValidationError(
                f"JSON nested more than {settings.API_JSON_MAX_DEPTH} levels deep is not accepted.",
                code="invalid",
            ) from None
        except ParseError as error:
            raise forms.ValidationError(str(error.detail), code="invalid") from None
        return parsed

    def bound_data(self, data, initial):
        # What the form shows back: the text as typed when it is refused (a lone surrogate,
        # shown decoded, could not even be written into the page).
        try:
            value = super().bound_data(data, initial)
            if not isinstance(value, forms.fields.InvalidJSONInput):
                check_json_value(value, max_depth=settings.API_JSON_MAX_DEPTH)
            return value
        except (RecursionError, ParseError):
            return forms.fields.InvalidJSONInput(data)


class ModelChoiceField(forms.ModelChoiceField):
    """Django's, with an id past the database's integer range refused as any unknown id: SQLite
    raises OverflowError for it where Django expects ValueError (a 500 on a 20-digit id)."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except OverflowError:
            raise forms.ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            ) from None


class ModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    """Django's, with the same refusal as ModelChoiceField's."""

    def _check_values(self, value):
        try:
            return super()._check_values(value)
        except OverflowError:
            raise forms.ValidationError(
                self.error_messages["invalid_pk_value"],
                code="invalid_pk_value",
                params={"pk": ", ".join(str(item) for item in value)[:100]},
            ) from None


class BoundedInputMixin:
    """What hostile input could do in a changelist or a change form, bounded as the API bounds
    it. The search: each word adds its own OR of matches, and thousands of words (a pasted
    document) made one PostgreSQL backend use memory until the kernel killed it; a longer search
    is cut to its first distinct words within config.filters.SearchFilter's bounds, and the page
    says so. JSON fields: read with the API's limits (JSONField above); relations, with ids
    past the database's range refused (the choice fields above). A changelist's filters in the
    query string: see get_changelist_instance."""

    def get_changelist_instance(self, request):
        # Django turns a filter it cannot build into its "?e=1" redirect (the changelist
        # without its parameters), but values that fail only when the query is compiled or
        # sent were a 500: a year out of range (`created_at__year=0`, or too large for an int),
        # a NUL in a text filter (`status__exact=%00`, which PostgreSQL cannot take: refused
        # before any query, as a client-side DataError is not told apart from the server's
        # here). They get the same redirect.
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            raise IncorrectLookupParameters("a NUL character in the query string")
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError) as error:
            logger.info("Changelist filters refused: %s (%s)", request.path, error)
            raise IncorrectLookupParameters(error) from error

    def response_action(self, request, queryset):
        # Django filters the changelist by the ids posted with an action as they are: one that
        # is not an id of the model (a tampered form: `_selected_action=x` for a UUID or an
        # integer key, a NUL, an integer past the database's range) raised in that query, a
        # 500. Refused with a message instead;
        # Django then sends the changelist back, nothing changed.
        key = self.model._meta.pk
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                if "\x00" in value:
                    raise ValidationError("a NUL character")
                # The key's validators include the database's range for an integer key
                # (SQLite raised OverflowError on a 30-digit id).
                key.run_validators(key.to_python(value))
        except ValidationError:
            self.message_user(
                request,
                "The selection holds a value that is not an id of this list; nothing was changed.",
                messages.ERROR,
            )
            return None
        return super().response_action(request, queryset)

    def get_search_results(self, request, queryset, search_term):
        words = distinct_words(smart_split(search_term))
        kept = " ".join(words[: SearchFilter.MAX_TERMS])[: SearchFilter.MAX_LENGTH]
        if kept != " ".join(words):
            self.message_user(
                request,
                f"Searched for “{kept}” only: a search takes at most {SearchFilter.MAX_TERMS} "
                f"words or quoted phrases and {SearchFilter.MAX_LENGTH} characters.",
                messages.WARNING,
            )
        return super().get_search_results(request, queryset, kept)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.JSONField):
            kwargs.setdefault("form_class", JSONField)
        elif isinstance(db_field, models.ManyToManyField):
            kwargs.setdefault("form_class", ModelMultipleChoiceField)
        elif isinstance(db_field, models.ForeignKey):
            kwargs.setdefault("form_class", ModelChoiceField)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class AdminSite(admin.AdminSite):
    """Django's admin site, as `admin.site` (config.apps.AdminConfig). Every ModelAdmin
    registered on it, the apps' and Django's own, bounds its input (BoundedInputMixin)."""

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, BoundedInputMixin):
            admin_class = type(
                admin_class.__name__,
                (BoundedInputMixin, admin_class),
                {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
            )
        super().register(model_or_iterable, admin_class, **options)


class ServiceActionsMixin:
    """Admin actions that call a service on each selected object: `each()` for one that needs
    nothing more, `each_with_form()` for one that asks for input first (an intermediate page
    with the form, then the service with its cleaned data). Refusals are reported per object;
    the count of the others is the success message."""

    def each(self, request, queryset, change: Callable, done: str) -> None:
        changed = apply_each(self, request, queryset, change, str)
        if changed:
            name = model_ngettext(self.opts, changed)
            self.message_user(request, f"{changed} {name} {done}.", messages.SUCCESS)

    def each_with_form(self, request, queryset, form_class, *, action, title, change, done):
        """The form's page first; once it is valid, `change(obj, cleaned_data)` on each."""
        form = form_class(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            self.each(request, queryset, lambda obj: change(obj, data), done)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "objects": list(queryset),
            "form": form,
            "action": action,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/service_action_form.html", context)


class ShownInline(admin.TabularInline):
    """Rows shown under their parent's page (a timeline, invoice lines, comments), never added,
    changed or deleted there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records nobody edits by hand (the audit log, credentials): no add, change or delete for
    anyone, superusers included; state changes go through the apps' services and actions."""

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RefusalMessageAdmin(admin.ModelAdmin):
    """A ModelAdmin whose add and change pages answer a service's refusal (ApplicationError)
    as the form's own error, not a 500. The form checks what it can; the service's rules (and
    a unique value another save took after the form checked it: a double-clicked "Save") are
    only known when it runs, inside the page's transaction, which the refusal rolls back:
    nothing is saved. The page is then shown again as for an invalid form, with what was typed
    and the refusal at the top of the form, so that one value can be changed and saved."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ApplicationError as error:
            if request.method != "POST":
                self.message_user(request, error.message, messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())
            # The same page again, its form bound to the same input, now invalid with the
            # refusal (get_form): Django renders it as any form that did not validate.
            request._service_refusal = error.message
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        refusal = getattr(request, "_service_refusal", None)
        if refusal is None:
            return form

        class RefusedForm(form):
            def clean(self):
                super().clean()
                raise ValidationError(refusal)

        return RefusedForm


class ServiceDeleteAdmin(RefusalMessageAdmin):
    """A ModelAdmin whose every deletion calls `delete_through_service` once per object.

    The delete page, `delete_model`, `delete_queryset` and the "Delete selected" action all go
    through it, so the service's rules, row locks and audit events apply. A refusal
    (ApplicationError) is an error message naming the object (`deletion_label`), which stays
    as it was; the others go on."""

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        # Listed on the class, the service-backed action below replaces the site-wide one of
        # the same name (Django's, which deletes with a plain queryset delete).
        if self.actions is not None and "delete_selected" not in self.actions:
            self.actions = ("delete_selected", *self.actions)

    def delete_through_service(self, request, obj) -> None:
        raise NotImplementedError(f"{type(self).__name__} must delete through its service")

    def deletion_label(self, obj) -> str:
        return str(obj)

    def get_deleted_objects(self, objs, request):
        """Django asks for delete permission on every related row; records with read-only
        admins (the audit log, credentials, invitations) would forbid the deletion outright.
        The service removes those rows itself, so only the editable models' permissions
        still apply."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        read_only = {
            str(model._meta.verbose_name)
            for model, model_admin in self.admin_site._registry.items()
            if isinstance(model_admin, ReadOnlyAdmin)
        }
        return deleted, model_count, perms_needed - read_only, protected

    def log_deletions(self, request, queryset):
        # Django logs before deleting; here each object is logged in its service's transaction
        # instead (see delete_queryset), so a refused deletion leaves no "deleted" entry.
        return []

    def delete_model(self, request, obj):
        self.delete_queryset(request, [obj])

    def delete_queryset(self, request, queryset) -> int:
        """Delete each object through the service; returns how many were deleted."""

        def delete(obj):
            with transaction.atomic():
                super(ServiceDeleteAdmin, self).log_deletions(request, [obj])
                self.delete_through_service(request, obj)

        return apply_each(self, request, queryset, delete, self.deletion_label)

    def response_delete(self, request, obj_display, obj_id):
        attr = request.POST.get(TO_FIELD_VAR, request.GET.get(TO_FIELD_VAR)) or self.opts.pk.attname
        if self.model._default_manager.filter(**{attr: obj_id}).exists():
            # Refused (the error message says why): back to the object, not "deleted".
            return HttpResponseRedirect(
                reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=[quote(obj_id)],
                    current_app=self.admin_site.name,
                )
            )
        return super().response_delete(request, obj_display, obj_id)

    @admin.action(
        permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s")
    )
    def delete_selected(self, request, queryset):
        """Django's confirmation page, then the deletions through the service, each reported."""
        if request.POST.get("post"):
            _, _, perms_needed, protected = self.get_deleted_objects(queryset, request)
            if perms_needed:
                raise PermissionDenied
            if not protected:
                selected = len(queryset)
                deleted = self.delete_queryset(request, queryset)
                if deleted:
                    name = model_ngettext(self.opts, selected)
                    self.message_user(
                        request, f"Deleted {deleted} of {selected} {name}.", messages.SUCCESS
                    )
                return None
        return django_delete_selected(self, request, queryset)


class ServiceSaveAdmin(ServiceDeleteAdmin):
    """A ModelAdmin for records staff edit (a catalogue): the add page calls `create_service`
    (`actor=`, every field of the form), the change page `update_service` (the object by
    `object_kwarg`, `actor=`, the changed fields only), and deletions `delete_service`, so
    each change is the service's, with its rules and audit event."""

    create_service = update_service = delete_service = None
    object_kwarg = ""

    def save_model(self, request, obj, form, change):
        if change:
            fields = {name: form.cleaned_data[name] for name in form.changed_data}
            original = type(obj).objects.get(pk=obj.pk)
            saved = type(self).update_service(
                **{self.object_kwarg: original}, actor=request.user, **fields
            )
        else:
            fields = {name: form.cleaned_data[name] for name in form.cleaned_data}
            saved = type(self).create_service(actor=request.user, **fields)
        obj.pk = saved.pk

    def delete_through_service(self, request, obj) -> None:
        type(self).delete_service(**{self.object_kwarg: obj}, actor=request.user)
