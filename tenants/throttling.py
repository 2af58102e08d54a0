"""The throttle of every tenant-aware API view: the caller's, the tenant's and the scope's
rate-limit windows, and the tenant's api_calls quota, in one atomic step.

Windows (fixed, counted in the cache; config.throttling):

- the caller: the user (`user` rate), or the client address (`anon`, or the view's
  `anonymous_throttle_scope`, e.g. `auth` on credential endpoints);
- the tenant: every request in it, at its plan tier's hourly rate (tenants.plans),
  or its settings' `rateLimitPerHour`;
- the tenant's scope, for views that set `throttle_scope` (analytics, billing, gateway): the
  tier's rate for that scope, else the scope's default rate (DEFAULT_THROTTLE_RATES).

When the request counts one of the tenant's api_calls (a member's or key's request; see
ControlPlaneAPIMixin.count_api_call) and the cache is Redis, the quota is checked and advanced
by the same Lua script as the windows: one round trip, and a request refused by either uses up
neither. Without Redis the windows are counted here and the quota by a conditional UPDATE.
"""

from config.epoch import kept_epoch
from config.metering import Window, admit
from config.throttling import WindowThrottle, configured_rate

from . import api_call_store
from .plans import plan_rates, tenant_hourly_rate
from .services.quotas import api_calls_admit, counted_reading


class TenantThrottle(WindowThrottle):
    def windows_for(self, request, view):
        windows = [self.principal_window(request, view)]
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            windows.append(Window.from_rate(f"tenant:{tenant.pk}", tenant_hourly_rate(tenant)))
        scope = getattr(view, "throttle_scope", None)
        if scope:
            rate = plan_rates(tenant.plan).get(scope) if tenant is not None else None
            owner = tenant.pk if tenant is not None else self.get_ident(request)
            windows.append(Window.from_rate(f"{scope}:{owner}", rate or configured_rate(scope)))
        return windows

    def admit(self, request, view, windows):
        counts_call = getattr(view, "counts_api_call", None)
        epoch = kept_epoch(request)
        if counts_call is None or not counts_call(request) or api_call_store.store() is None:
            return admit(windows, epoch=epoch)
        admission = api_calls_admit(tenant=request.tenant, windows=windows, epoch=epoch)
        request.api_call_counted = admission.admitted
        request.api_calls_known = counted_reading(request.tenant, admission)
        return admission
