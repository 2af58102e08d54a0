"""Admin building blocks shared by the apps."""

from collections.abc import Callable, Iterable

from django.contrib import admin, messages

from .exceptions import ApplicationError


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
