"""Admin pages of the packages the project uses (django-celery-beat's periodic tasks and
schedules, django-axes' login attempts), with what staff or a mistyped or hostile value did to
them fixed. Each was a 500 where the page should show the form again with its error, or do what
its button says:

- a periodic task whose task name the field refused (longer than 200 characters, a NUL): the
  form's own clean() read the missing value (KeyError);
- args or kwargs nested past the interpreter's recursion limit: their JSON check raised
  RecursionError, not the ValueError it catches;
- a crontab field out of range (`hour: -1`): the form showed its schedule back in words, read
  from the refused values, and celery's parser raised (ParseException);
- django-axes' "Clean up expired attempts" action, on every use: it reads the time of the
  request's login attempt, which only a login sets (AttributeError).

`replace_admins(site)` registers these in place of the packages' own; config.apps.AdminConfig
calls it once every app's admin is loaded.
"""

from axes import admin as axes
from axes.models import AccessAttempt
from celery.schedules import ParseException
from django import forms
from django.contrib import admin
from django_celery_beat import admin as beat
from django_celery_beat.models import CrontabSchedule, PeriodicTask


class PeriodicTaskForm(beat.PeriodicTaskForm):
    def clean(self):
        if "task" in self.errors:
            # Refused by its field: that error stands, and the package's clean() needs the
            # value. (The form is invalid anyway, so its other checks can wait.)
            return forms.ModelForm.clean(self)
        return super().clean()

    def _clean_json(self, field):
        try:
            return super()._clean_json(field)
        except RecursionError:
            raise forms.ValidationError("Unable to parse JSON: nested too deep.") from None


class PeriodicTaskAdmin(beat.PeriodicTaskAdmin):
    form = PeriodicTaskForm


class CrontabScheduleAdmin(beat.CrontabScheduleAdmin):
    @admin.display(description="Human readable")
    def human_readable(self, schedule: CrontabSchedule) -> str:
        try:
            return schedule.human_readable
        except (ParseException, ValueError):
            return "(not a valid schedule: see the fields' errors)"


class AccessAttemptAdmin(axes.AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts")
    def cleanup_expired_attempts(self, request, queryset):
        # The package's action measures expiry from the request's login attempt, which an
        # admin request has none of: from now, as the package does when that time is unset.
        request.axes_attempt_time = None
        return super().cleanup_expired_attempts(request, queryset)


def replace_admins(site: admin.AdminSite) -> None:
    for model, model_admin in (
        (PeriodicTask, PeriodicTaskAdmin),
        (CrontabSchedule, CrontabScheduleAdmin),
        (AccessAttempt, AccessAttemptAdmin),
    ):
        # Only where the package registered its own (django-axes does unless
        # AXES_ENABLE_ADMIN is off).
        if site.is_registered(model):
            site.unregister(model)
            site.register(model, model_admin)
