"""Settings shared by every environment; all values come from the environment (django-environ).

With no environment at all the project runs on embedded defaults: SQLite, a local-memory cache
and a file-system Celery transport, so a newcomer needs nothing but Python.
"""

import base64
import binascii
import os
import re
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu.transport import TRANSPORT_ALIASES

from config.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# Numbers and switches from the environment are checked at start-up: a value that is not a
# number, or is out of its range, or a switch that is neither true nor false, stops the process
# with ImproperlyConfigured naming the variable, rather than running with it. Unchecked, a
# negative TRUSTED_PROXY_COUNT trusted the client's own X-Forwarded-For entry, a retention of 0
# or less days deleted webhook deliveries not yet sent, a duration past a datetime's range made
# every request or beat run that used it fail, and SECURE_SSL_REDIRECT=flase (any word but
# django-environ's true ones) turned the redirect off.
_INT_MAX = 2**31 - 1
# Durations in their unit: at most a hundred years.
_DAYS_MAX, _HOURS_MAX, _MINUTES_MAX, _SECONDS_MAX = 36_500, 876_000, 52_560_000, 3_153_600_000


def _raw(name: str) -> str:
    """The variable's text, stripped; empty when unset (its default applies)."""
    return env.str(name, default="").strip()


def _env_number(name: str, default, parse, minimum, maximum):
    raw = _raw(name)
    return _number(name, raw, parse, minimum, maximum) if raw else default


def _number(name: str, raw: str, parse, minimum, maximum):
    try:
        value = parse(raw)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise ImproperlyConfigured(f"{name} must be {kind}; it is {raw!r}.") from None
    low = float("-inf") if minimum is None else minimum
    if not low <= value <= maximum:  # NaN too
        bound = f"at most {maximum}" if minimum is None else f"from {minimum} to {maximum}"
        raise ImproperlyConfigured(f"{name} must be {bound}; it is {raw!r}.")
    return value


def env_int(name: str, default: int, *, minimum: int | None = 0, maximum: int = _INT_MAX) -> int:
    """The integer in `name`, or `default` when unset or empty; from `minimum` (None: no
    lower bound) to `maximum`, else ImproperlyConfigured."""
    return _env_number(name, default, int, minimum, maximum)


def env_int_list(
    name: str, default: list[int], *, minimum: int = 0, maximum: int = _INT_MAX
) -> list[int]:
    """env_int for a comma-separated list of integers (at least one)."""
    raw = _raw(name)
    if not raw:
        return default
    return [_number(name, part.strip(), int, minimum, maximum) for part in raw.split(",")]


_TRUE, _FALSE = {"true", "on", "ok", "y", "yes", "1"}, {"false", "off", "no", "n", "0"}


def env_bool(name: str, default: bool) -> bool:
    """The switch in `name`, or `default` when unset or empty: true/false, yes/no, on/off or
    1/0, else ImproperlyConfigured. (django-environ's own cast reads anything else, a typo
    like `flase` included, as false.)"""
    raw = _raw(name).lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ImproperlyConfigured(
            f"{name} must be true or false (yes/no, on/off, 1/0); it is {raw!r}."
        )
    return raw in _TRUE


def env_float(
    name: str, default: float, *, minimum: float | None = 0.0, maximum: float = _SECONDS_MAX
) -> float:
    """env_int for a decimal number."""
    return _env_number(name, default, float, minimum, maximum)


# Text from the environment is checked the same way where a wrong value would otherwise start
# and fail later, request by request: a rate DRF cannot read made every request a 500 (and
# "-1/min" refused them all), a Redis address without its scheme every request, an audit key
# that is not one every export and checkpoint, a currency longer than a code the billing
# migration.
def env_text(name: str, default: str, *, valid, expected: str, secret: bool = False) -> str:
    """The text in `name`, stripped, or `default` when unset or empty; `valid(text)` must be
    true, else ImproperlyConfigured saying what is `expected` (and the value, unless `secret`)."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        accepted = valid(raw)
    except ValueError:  # urlsplit's, on a malformed address
        accepted = False
    if not accepted:
        found = "it is not" if secret else f"it is {_without_password(raw)!r}"
        raise ImproperlyConfigured(f"{name} must be {expected}; {found}.")
    return raw


def _without_password(raw: str) -> str:
    """A value as an error may show it: an address's account and password (what precedes its
    host's @, redis://:secret@redis) masked."""
    if not re.search(r":[^@]*@", raw):
        return raw
    return re.sub(r"^([A-Za-z0-9+.-]*:?/*)[^@/]*@", r"\1***@", raw)


def env_list(name: str, default: list[str], *, valid, expected: str) -> list[str]:
    """env_text for a comma-separated list: each entry checked, empty ones left out."""
    raw = _raw(name)
    if not raw:
        return default
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    for entry in entries:
        if not valid(entry):
            raise ImproperlyConfigured(f"{name} must list {expected}; it has {entry!r}.")
    return entries


# Host names as Django matches them: a name or address, `.example.com` for its subdomains too,
# or `*`. A scheme, a port or a path never matches a request, so every one was a 400.
_HOST = r"\*|\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]"
_HOSTS_EXPECTED = "host names (api.example.com, .example.com for subdomains, or *)"


def env_hosts(name: str, default: list[str]) -> list[str]:
    return env_list(name, default, valid=matching(_HOST), expected=_HOSTS_EXPECTED)


def matching(regex: str):
    """A check for env_text and env_list: the whole text matches `regex`."""
    return lambda raw: re.fullmatch(regex, raw) is not None


def _is_rate(raw: str) -> bool:
    count, _seconds = parse_rate(raw)  # ValueError: not a rate
    return count >= 1  # 0/min (or less) refused every request


def env_rate(name: str, default: str) -> str:
    """A throttle's rate, as 100/min (config.rates)."""
    expected = "a rate of at least one request: a whole number, / and s, min, hour or day"
    return env_text(name, default, valid=_is_rate, expected=f"{expected} (100/min)")


def _is_web_address(raw: str, *, base: bool) -> bool:
    parts = urlsplit(raw)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and (parts.port is None or parts.port > 0)  # .port raises on one out of range
        and not re.search(r"\s", raw)
        and not (base and (parts.query or parts.fragment))
    )


def env_web_address(name: str, *, base: bool = False) -> str:
    """An absolute http(s) address, or "" when unset; a `base` one has no query or fragment
    (paths are appended to it)."""
    expected = "an absolute http:// or https:// address" + (
        ", without query or fragment" if base else ""
    )
    return env_text(name, "", valid=lambda raw: _is_web_address(raw, base=base), expected=expected)


# ISO 4217: what the billing models store.
_CURRENCY, _CURRENCY_EXPECTED = matching(r"[A-Z]{3}"), "an ISO 4217 currency code, as USD"


def env_path(name: str, default: str) -> str:
    """A folder from the environment, as an absolute path. A relative one is read from each
    process's working directory: a worker started elsewhere than the web process wrote its
    files (a job's artifacts, the embedded database, the file-system queue) where the web
    process never looked."""
    return env_text(
        name, default, valid=os.path.isabs, expected="an absolute path (/srv/control-plane/...)"
    )


def _is_key_seed(raw: str) -> bool:
    try:
        return len(base64.b64decode(raw, validate=True)) == 32
    except binascii.Error:
        return False


# Where the embedded defaults keep their files (the SQLite database, the Celery file-system
# queue, uploaded media), so a second instance (the live tests) can run beside the quick start.
VAR_DIR = Path(env_path("VAR_DIR", str(BASE_DIR / "var")))

# Only the dev/test settings may fall back to this; production refuses it.
INSECURE_DEV_SECRET_KEY = "django-insecure-dev-only-never-use-in-production"
SECRET_KEY = env("SECRET_KEY", default=INSECURE_DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_hosts("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
SERVICE_NAME = env("SERVICE_NAME", default="control-plane")
SERVICE_VERSION = "0.1.0"
# Number of reverse proxies in front of the app whose X-Forwarded-For entries are trusted.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, maximum=64)

INSTALLED_APPS = [
    "config.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "rest_framework_simplejwt.token_blacklist",
    "axes",
    "accounts",
    "tenants",
    "audit",
    "billing",
    "security",
    "playground",
    "support",
    "analytics",
    "notifications",
]

MIDDLEWARE = [
    "config.middleware.RequestIDMiddleware",
    # Every error outside the HTML pages is the JSON envelope; oversized bodies refused first.
    "config.middleware.JSONErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Django's session and message middleware, making the store on first use (API requests
    # rarely use either).
    "config.middleware.LazySessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.middleware.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a lockout flagged during authentication into the error envelope (429).
    "accounts.lockout.LockoutMiddleware",
]

# axes looks for its own middleware by name; accounts.lockout.LockoutMiddleware is its subclass
# (with the async path fixed), so the check's warning does not apply.
SILENCED_SYSTEM_CHECKS = ["axes.W002"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
# Every path answers with and without its trailing slash; never redirect.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Templates the apps share (the admin's service action form).
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# The embedded SQLite database serves runserver's threads, the Celery worker and beat at once.
# With SQLite's defaults a burst of writes failed with "database is locked" (a transaction that
# read first cannot wait for the write lock, and readers block the writer). WAL lets readers run
# beside the one writer; IMMEDIATE takes the write lock when a transaction begins, so writers
# queue for up to `timeout` seconds; synchronous=NORMAL is durable enough under WAL and saves an
# fsync per commit. Options in DATABASE_URL's query string win. ATOMIC_REQUESTS stays off, as
# Django's SQLite notes advise with IMMEDIATE: a whole request would hold the write lock.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        **DATABASES["default"].get("OPTIONS", {}),
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Persistent connections (checked before reuse): a new PostgreSQL connection per request costs
# more than the whole API stack.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60, maximum=_SECONDS_MAX)
# No `SELECT 1` before each request's first query (Django's CONN_HEALTH_CHECKS, a round trip per
# request): the first middleware and every task poll each kept connection's socket instead and
# replace one the server has closed (config.connections).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
# Connection pool (psycopg_pool), off by default. Under a WSGI server and under config.asgi alike
# (playground.serving), requests run on long-lived threads, each keeping its connection between
# requests (CONN_MAX_AGE): a process holds at most one per thread. A pool checks a connection out
# and back in around every request instead; under config.asgi that cost the API's reads up to a
# fifth of their throughput (docs/performance.md). It stays available: Django's own ASGI handler,
# which runs each request on a new thread, needs it.
DATABASE_POOL = env_bool("DATABASE_POOL", False)
if DATABASE_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        _pool_min = env_int("DATABASE_POOL_MIN_SIZE", 2)
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": _pool_min,
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=max(_pool_min, 1)),
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0, minimum=0.001),
        }
# Hot fixed queries (the API-key lookup, GET organizations/current) are prepared on the PostgreSQL
# server once per connection (config.prepared). Turn off behind a pooler that cannot keep
# prepared statements (PgBouncer in transaction mode before 1.21, or max_prepared_statements = 0).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASE_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Preparing allowed, never automatic: only the statements config.prepared asks for are.
    # (config.prepared.EXPLICIT_ONLY; settings import no app code.)
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2**31 - 1)
# Seconds a new PostgreSQL connection may take to be made (libpq's connect_timeout; 0: none).
# Without it, a database host that does not answer at all (a network partition, a host gone
# without closing its sockets) holds a request, a settlement or a task until the system's TCP
# retries give up, minutes later; with it the request answers 503 (config.exceptions) in
# seconds. A connect_timeout in DATABASE_URL's query string wins.
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=None)
if DATABASE_CONNECT_TIMEOUT > 0 and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", DATABASE_CONNECT_TIMEOUT
    )
# Seconds a web process's PostgreSQL statement may run before the server cancels it (the API
# answers 503); 0 for no limit. Web processes only (config.asgi, config.wsgi): Celery workers
# and manage.py are not limited (config.connections.limit_statement_time).
DATABASE_STATEMENT_TIMEOUT = env_float("DATABASE_STATEMENT_TIMEOUT", 30.0, minimum=None)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_text(
    "REDIS_URL",
    "",
    valid=matching(r"(redis|rediss|unix)://\S*"),
    expected="a redis://, rediss:// or unix:// address",
)
# Seconds Redis (the cache, the rate limits and quotas counted there, the task broker) may take
# to answer a command, and to accept a new connection. A Redis that stops answering without
# closing its connections (a network partition, a failover behind a NAT) otherwise holds a
# request for redis-py's 5 s per call, and a task's publish for ever (kombu sets no timeout);
# with these the request answers 503 (config.exceptions) and a publish fails after its
# retries. Redis answers the platform's commands in well under a millisecond; the longest
# (a flush's Lua script) in a few. A timeout in REDIS_URL's query string wins for the cache.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 1.0, minimum=None)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 1.0, minimum=None)
# 0 (or less, as DATABASE_CONNECT_TIMEOUT) for none: a negative socket timeout would fail
# every connection with a ValueError.
_REDIS_TIMEOUTS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT if REDIS_SOCKET_TIMEOUT > 0 else None,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT if REDIS_CONNECT_TIMEOUT > 0 else None,
}
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's Redis cache, one connection pool per process (config/cache.py).
            "BACKEND": "config.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="cp"),
            "OPTIONS": dict(_REDIS_TIMEOUTS),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Sessions (the admin, the browsable API) are read from the cache and written through to the
# database: a signed-in request reads its session without a SQL statement, and a session outlives
# a cache flush or restart (a miss reads the database row).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses a locked account+address pair before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Lifetime of the tokens issued by POST /api/v1/auth/token/.
AUTH_TOKEN_TTL = timedelta(
    hours=env_int("AUTH_TOKEN_TTL_HOURS", 24 * 7, minimum=1, maximum=_HOURS_MAX)
)

# JWT (POST /api/v1/auth/login, refresh, logout): djangorestframework-simplejwt. Refresh tokens
# rotate on every use and the used one is blacklisted, so a replayed refresh token is refused.
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        minutes=env_int("JWT_ACCESS_TOKEN_MINUTES", 15, minimum=1, maximum=_MINUTES_MAX)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        hours=env_int("JWT_REFRESH_TOKEN_HOURS", 24, minimum=1, maximum=_HOURS_MAX)
    ),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    # A password change invalidates every JWT issued before it.
    "CHECK_REVOKE_TOKEN": True,
}

# API keys: usage is counted in memory and the cache (Redis) on the request path and written to
# the database in batches by Celery beat (accounts.tasks.flush_api_key_usage) every this many
# seconds.
API_KEY_USAGE_FLUSH_SECONDS = env_int("API_KEY_USAGE_FLUSH_SECONDS", 60, maximum=_SECONDS_MAX)
# On Redis each web process buffers its counts and pushes them every this many seconds (0: on
# every request, one more Redis round trip each); a killed process loses at most that much.
API_KEY_USAGE_BUFFER_SECONDS = env_float("API_KEY_USAGE_BUFFER_SECONDS", 1.0)
# API keys that are not revoked an organization may have (409 CONFLICT past it); revoked keys
# are kept with their usage and do not count.
API_KEYS_PER_TENANT = env_int("API_KEYS_PER_TENANT", 100)

# Analytics (docs/analytics.md): API requests are counted off the request path and flushed as
# facts every ANALYTICS_FLUSH_SECONDS; beat folds new facts into hourly and daily roll-ups every
# minute; raw facts (requests, query events) older than the retention are pruned nightly, their
# roll-ups kept.
ANALYTICS_CAPTURE_REQUESTS = env_bool("ANALYTICS_CAPTURE_REQUESTS", True)
ANALYTICS_FLUSH_SECONDS = env_int("ANALYTICS_FLUSH_SECONDS", 60, maximum=_SECONDS_MAX)
ANALYTICS_RAW_RETENTION_DAYS = env_int(
    "ANALYTICS_RAW_RETENTION_DAYS", 90, minimum=1, maximum=_DAYS_MAX
)
# The most events one POST analytics/events may carry.
ANALYTICS_EVENTS_PER_BATCH = 1000
# How many values of each kind the tenant names (query texts, categories, error categories) a
# roll-up bucket keeps: the most frequent; the totals count every event (docs/analytics.md).
ANALYTICS_VALUES_PER_KIND = env_int("ANALYTICS_VALUES_PER_KIND", 500, minimum=100, maximum=100_000)

# Brute-force protection (django-axes): this many failed logins from one address for one account
# lock that pair for the cool-off; while locked even the right password answers 429.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1, maximum=_MINUTES_MAX)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.lockout.username_from_credentials"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip_address"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Attempts made while locked out do not extend the lock: it lifts a cool-off after the last
# counted failure, which is what Retry-After tells the client.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Successful logins are already in the audit log (auth.login.succeeded).
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
# Job artifacts (orchestration outputs, workflow results) are private: served through the API
# to the tenant's members only, never from MEDIA_URL. Production may point this at object
# storage (any Django storage backend).
ARTIFACTS_ROOT = env_path("ARTIFACTS_ROOT", str(VAR_DIR / "artifacts"))
# Support ticket attachments are private in the same way: downloaded through the API only.
ATTACHMENTS_ROOT = env_path("ATTACHMENTS_ROOT", str(VAR_DIR / "attachments"))
# config.storage: Django's, removing a file whose write failed and answering 503 for a full or
# failing volume.
STORAGES = {
    "default": {"BACKEND": "config.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": {
        "BACKEND": "config.storage.FileSystemStorage",
        "OPTIONS": {"location": ARTIFACTS_ROOT, "base_url": None},
    },
    "attachments": {
        "BACKEND": "config.storage.FileSystemStorage",
        "OPTIONS": {"location": ATTACHMENTS_ROOT, "base_url": None},
    },
}
# Support: the largest ticket attachment accepted (bytes; also counted in the storage quota).
SUPPORT_ATTACHMENT_MAX_BYTES = env_int("SUPPORT_ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
# Decision rules and AI agents one organization may keep (409 CONFLICT past it; deleting makes
# room). They are configuration, not data: every ticket and refund is tried against the rules in
# order, and evaluating the rules traces each rule tried.
DECISION_RULES_PER_TENANT = env_int("DECISION_RULES_PER_TENANT", 500)
AI_AGENTS_PER_TENANT = env_int("AI_AGENTS_PER_TENANT", 100)

# Dev settings turn on DRF's browsable API and its login pages.
BROWSABLE_API = False

# Audit: checkpoints of the hash chains are signed with Ed25519; this is the private key's 32-byte
# seed, base64. Default: derived from SECRET_KEY. Set it explicitly so SECRET_KEY can rotate
# without changing the key that verifies existing checkpoints.
AUDIT_CHECKPOINT_KEY = env_text(
    "AUDIT_CHECKPOINT_KEY", "", valid=_is_key_seed, expected="32 bytes, base64-encoded", secret=True
)
AUDIT_SEAL_BATCH_SIZE = env_int("AUDIT_SEAL_BATCH_SIZE", 1000, minimum=1)
# A commit that recorded events queues a seal due this many seconds later (unless one is
# queued): under a stream of events, one seal task per delay seals them all, where a task per
# commit cost a tenth of a busy worker's time. 0 seals at once.
AUDIT_SEAL_DELAY_SECONDS = env_float("AUDIT_SEAL_DELAY_SECONDS", 1.0)

# How long a process may keep a caller's lookup (user, token, membership, tenant; config.epoch)
# at most. Every write through the application makes the next request read it again anyway;
# this bounds what it cannot see (a write made with psql). 0 keeps nothing. Needs Redis.
PRINCIPAL_CACHE_SECONDS = env_float("PRINCIPAL_CACHE_SECONDS", 30.0)

# Web processes freeze the objects loaded at start-up out of the garbage collector's walks
# (config.memory): shorter and fewer collection pauses.
GC_FREEZE_AT_STARTUP = env_bool("GC_FREEZE_AT_STARTUP", True)

# Tenancy
TENANT_TRIAL_DAYS = env_int("TENANT_TRIAL_DAYS", 14, maximum=_DAYS_MAX)
# Organizations a user who is not staff may own (not cancelled) and still create another
# through POST tenants/: each new one brings its plan's free quotas. 0: only staff create them.
ORGANIZATIONS_PER_USER = env_int("ORGANIZATIONS_PER_USER", 10)
# Invitations to join a tenant expire after this many days. The emailed link: when set,
# INVITATION_ACCEPT_URL with the token appended (a front end's page, which posts it to
# /api/v1/invitations/accept); else the control plane's accept page on PUBLIC_BASE_URL, else
# on the host the inviting request came in on (tenants/emails.py).
INVITATION_TTL_DAYS = env_int("INVITATION_TTL_DAYS", 7, minimum=1, maximum=_DAYS_MAX)
# Invitations (each may email a link) one organization may issue in 24 hours, to one address
# and in all: 429 RATE_LIMIT_EXCEEDED past either, with Retry-After.
INVITATIONS_PER_ADDRESS_PER_DAY = env_int("INVITATIONS_PER_ADDRESS_PER_DAY", 5)
INVITATIONS_PER_TENANT_PER_DAY = env_int("INVITATIONS_PER_TENANT_PER_DAY", 500)
INVITATION_ACCEPT_URL = env_web_address("INVITATION_ACCEPT_URL")
# The public address of this control plane (https://cp.example.com), for links in emails.
PUBLIC_BASE_URL = env_web_address("PUBLIC_BASE_URL", base=True)
DEFAULT_FROM_EMAIL = env_text(
    "DEFAULT_FROM_EMAIL",
    "Control Plane <no-reply@localhost>",
    valid=lambda raw: "@" in parseaddr(raw)[1],
    expected="an email address, alone or as Name <address>",
)
# Outgoing mail, through SMTP in production (EMAIL_BACKEND; the console in development): the
# server, the account it signs in with, and its encryption. EMAIL_TIMEOUT bounds each exchange
# with the server: an invitation's email leaves from the inviting request once it commits, and
# Django sets no timeout, so a mail server that stopped answering held that request (and a
# notification task its worker) for as long as the connection stayed open.
EMAIL_HOST = env_text(
    "EMAIL_HOST",
    "localhost",
    valid=matching(r"[A-Za-z0-9_.-]+|\[?[0-9A-Fa-f:.]+\]?"),
    expected="a host name or address, without scheme or port (EMAIL_PORT)",
)
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually on port 587
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # TLS from the first byte, usually on 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured(
        "EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be true: STARTTLS (port 587) or TLS from "
        "the start (port 465), one or the other."
    )
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0, minimum=0.001, maximum=_SECONDS_MAX)
# Quotas: a `quota.warning` event is recorded once per period when usage crosses this percentage.
QUOTA_WARNING_THRESHOLD = env_float("QUOTA_WARNING_THRESHOLD", 80.0, maximum=100)
# Themes: uploaded logos (PNG, JPEG, sanitised SVG) up to this size.
THEME_LOGO_MAX_BYTES = env_int("THEME_LOGO_MAX_BYTES", 512 * 1024)
MEDIA_ROOT = env_path("MEDIA_ROOT", str(VAR_DIR / "media"))
MEDIA_URL = env("MEDIA_URL", default="/media/")

# API
API_RATE_USER = env_rate("API_RATE_USER", "100/min")
# Request bodies: no body over this many bytes, multipart uploads included (413
# PAYLOAD_TOO_LARGE); Django's own limit for what it reads into memory, applied to the whole body.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1)
# JSON bodies nested deeper than this (arrays and objects) are refused (400 VALIDATION_ERROR).
API_JSON_MAX_DEPTH = env_int("API_JSON_MAX_DEPTH", 32, minimum=1, maximum=500)
# Idempotency-Key (tenants.idempotency): a key and its stored answer are kept this many hours
# (older ones count as never sent, and beat prunes them hourly); a request holds its key for
# a lease of this many seconds, after which a retry may take over the claim of one that died.
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24, minimum=1, maximum=_HOURS_MAX)
IDEMPOTENCY_KEY_LEASE_SECONDS = env_int(
    "IDEMPOTENCY_KEY_LEASE_SECONDS", 60, minimum=1, maximum=_SECONDS_MAX
)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.HashedTokenAuthentication",
        "accounts.authentication.APIKeyAuthentication",
        "accounts.authentication.BearerJWTAuthentication",
        "accounts.authentication.PrincipalSessionAuthentication",
    ],
    # Our base views set their own permission class; anything else is denied by default.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_THROTTLE_CLASSES": [],
    "DEFAULT_THROTTLE_RATES": {
        # Default rates: 100/min per user; analytics 20/min, billing 10/min and gateway 60/min
        # per tenant.
        "anon": env_rate("API_RATE_ANON", "60/min"),
        "user": API_RATE_USER,
        "auth": env_rate("API_RATE_AUTH", "20/min"),
        "stylesheet": env_rate("API_RATE_STYLESHEET", "600/min"),
        # Payment providers' events, per sending address (providers retry in bursts).
        "provider_webhooks": env_rate("API_RATE_PROVIDER_WEBHOOKS", "600/min"),
        "analytics": env_rate("API_RATE_ANALYTICS", "20/min"),
        "billing": env_rate("API_RATE_BILLING", "10/min"),
        "gateway": env_rate("API_RATE_GATEWAY", "60/min"),
        # Gateway tokens per minute per tenant: each call counts its reservation (prompt
        # estimate + max_tokens), as OpenAI's own TPM limits do.
        "gateway_tokens": env_rate("API_RATE_GATEWAY_TOKENS", "40000/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "config.pagination.StandardPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "config.filters.FilterBackend",
        "config.filters.SearchFilter",
        "config.filters.OrderingFilter",
    ],
    # JSON only: the browsable API is a dev-only aid, and even there errors are JSON.
    "DEFAULT_RENDERER_CLASSES": ["config.renderers.JSONRenderer"],
    # DRF's, without parsing the headers of a request that asks for nothing in particular.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.ContentNegotiation",
    # JSON with the API's depth and text limits (config.parsers); the size limit of every body
    # is config.middleware.JSONErrorMiddleware's. JSON only, as the API documents: an upload
    # names MultiPartParser itself. Form input is a second language with its own rules: DRF
    # reads a JSON field given in it with json.loads, past the parser's depth and text checks
    # (a deep one was a RecursionError, a 500), and takes a boolean left out of it as false.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "tenants.schema.ControlPlaneAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

# Plan tiers (free, pro, enterprise, custom) layered on the rates above: `tenant` limits every
# request in a tenant, the other scopes replace the per-tenant defaults for that tier
# (tenants.plans).
API_PLAN_RATES = {
    "free": {"tenant": env_rate("API_RATE_PLAN_FREE", "100/hour")},
    "pro": {
        "tenant": env_rate("API_RATE_PLAN_PRO", "1000/hour"),
        "analytics": "60/min",
        "billing": "30/min",
        "gateway": "300/min",
        "gateway_tokens": "200000/min",
    },
    "enterprise": {
        "tenant": env_rate("API_RATE_PLAN_ENTERPRISE", "10000/hour"),
        "analytics": "200/min",
        "billing": "100/min",
        "gateway": "1000/min",
        "gateway_tokens": "2000000/min",
    },
    # Negotiated: enterprise figures unless the tenant's settings set `rateLimitPerHour`.
    "custom": {
        "tenant": env_rate("API_RATE_PLAN_CUSTOM", "10000/hour"),
        "analytics": "200/min",
        "billing": "100/min",
        "gateway": "1000/min",
        "gateway_tokens": "2000000/min",
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Control Plane API",
    "DESCRIPTION": (
        "Multi-tenant control plane for AI products. Tenant-scoped endpoints take the tenant "
        "from the API key, the `X-Organization-ID` header (UUID or slug), the `organization_id` "
        "query parameter or the caller's only membership. Every error is "
        '`{"error": {code, message, details, request_id}}`.'
    ),
    "VERSION": SERVICE_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.request_bodies_refuse_unknown_fields",
    ],
    "ENUM_NAME_OVERRIDES": {
        "PerformanceTrendEnum": ["UP", "DOWN", "STABLE"],
        "SatisfactionTrendEnum": ["improving", "stable", "declining", "insufficient_data"],
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "MembershipStatusEnum": "tenants.models.MembershipStatus",
        "PlanTierEnum": "tenants.models.PlanTier",
        "RoleEnum": "tenants.models.Role",
        "ActorTypeEnum": "audit.models.ActorType",
        "TemplateStatusEnum": "playground.models.TemplateStatus",
        "ExecutionStatusEnum": "playground.models.ExecutionStatus",
        "CallStatusEnum": "playground.models.CallStatus",
        "TemplateVariableTypeEnum": "playground.models.VariableType",
        "NotificationTypeEnum": "notifications.models.NotificationType",
        "ProjectStatusEnum": "playground.models.ProjectStatus",
        "ProjectPriorityEnum": "playground.models.Priority",
        "JobStatusEnum": "playground.models.JobStatus",
        "PhaseStatusEnum": "playground.models.PhaseStatus",
        "IntegrationOperationStatusEnum": "playground.models.IntegrationOperation.Status",
        "SeverityEnum": "security.models.Severity",
        "IncidentStatusEnum": "security.models.IncidentStatus",
        "ComplianceAuditStatusEnum": "security.models.AuditStatus",
        "FindingStatusEnum": "security.models.FindingStatus",
        "ProcessingActivityStatusEnum": "security.models.ActivityStatus",
        "TimelineKindEnum": "security.models.TimelineKind",
        "CreditNoteKindEnum": "billing.models.CreditNoteKind",
        "RepresentativeStatusEnum": "support.models.RepresentativeStatus",
        "RepresentativeRoleEnum": "support.models.RepresentativeRole",
        "TicketStatusEnum": "support.models.TicketStatus",
        "TicketPriorityEnum": "support.models.TicketPriority",
        "TicketCategoryEnum": "support.models.TicketCategory",
        "CustomerTierEnum": "support.models.CustomerTier",
        "EscalationStatusEnum": "support.models.EscalationStatus",
        "EscalationPriorityEnum": "support.models.EscalationPriority",
        "EscalationReasonEnum": "support.models.EscalationReason",
        "SlaStatusEnum": "support.models.SlaStatus",
        "SlaBreachEnum": "support.models.SlaTarget",
        "SlaPauseReasonEnum": "support.models.SlaPauseReason",
        "AgentTypeEnum": "support.models.AgentType",
        "AgentStatusEnum": "support.models.AgentStatus",
        "DecisionRuleActionEnum": "support.rules.ACTIONS",
        "RuleApplicationOutcomeEnum": "support.models.RuleApplication.Outcome",
        # A budget's period takes the same three values as a customer's billing cycle.
        "BillingCycleEnum": "support.models.BillingCycle",
        "BudgetTypeEnum": "support.models.BudgetType",
        "RefundStatusEnum": "support.models.RefundStatus",
        "RefundReasonEnum": "support.models.RefundReason",
        "IncidentCategoryEnum": "security.models.IncidentCategory",
    },
}

# Webhooks (notifications app; docs/webhooks.md). Targets must be public https URLs: the two
# switches below are for development, tests and closed networks only.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOKS_ALLOW_PRIVATE_TARGETS", False)
WEBHOOKS_ALLOW_HTTP = env_bool("WEBHOOKS_ALLOW_HTTP", False)
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.001)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.001)
WEBHOOK_RESPONSE_EXCERPT_BYTES = env_int("WEBHOOK_RESPONSE_EXCERPT_BYTES", 2048)
# Waits before attempts 2, 3, ... (the first is immediate), as Svix: 5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h; each stretched or shrunk by up to WEBHOOK_RETRY_JITTER.
WEBHOOK_RETRY_SCHEDULE_SECONDS = env_int_list(
    "WEBHOOK_RETRY_SCHEDULE_SECONDS",
    [5, 300, 1800, 7200, 18000, 36000, 36000],
    maximum=_SECONDS_MAX,
)
WEBHOOK_RETRY_JITTER = env_float("WEBHOOK_RETRY_JITTER", 0.1, maximum=1)
# A receiver's Retry-After (429, 503) is honoured up to this many seconds.
WEBHOOK_RETRY_AFTER_MAX_SECONDS = env_int(
    "WEBHOOK_RETRY_AFTER_MAX_SECONDS", 3600, maximum=_SECONDS_MAX
)
WEBHOOK_DISABLE_AFTER_DAYS = env_int("WEBHOOK_DISABLE_AFTER_DAYS", 5, minimum=1, maximum=_DAYS_MAX)
WEBHOOK_DELIVERY_RETENTION_DAYS = env_int(
    "WEBHOOK_DELIVERY_RETENTION_DAYS", 30, minimum=1, maximum=_DAYS_MAX
)
WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS = env_int(
    "WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS", 24, maximum=_HOURS_MAX
)
# Concurrent HTTP requests of one relay run, and deliveries it claims at a time. A claim is
# leased for WEBHOOK_TIMEOUT_SECONDS x 2 x batch / (concurrency - 1) + 60 s (the batch waits
# behind the one in flight; one organization holds all senders but one): how long the rows of
# a relay that died wait before another sends them.
WEBHOOK_RELAY_CONCURRENCY = env_int("WEBHOOK_RELAY_CONCURRENCY", 4, minimum=1, maximum=1024)
WEBHOOK_RELAY_BATCH_SIZE = env_int("WEBHOOK_RELAY_BATCH_SIZE", 100, minimum=1)
WEBHOOK_RELAY_INTERVAL_SECONDS = env_int(
    "WEBHOOK_RELAY_INTERVAL_SECONDS", 5, minimum=1, maximum=_SECONDS_MAX
)
WEBHOOK_REPLAY_MAX_EVENTS = env_int("WEBHOOK_REPLAY_MAX_EVENTS", 10000, minimum=1)
# Endpoints one organization may have (active or not): each event goes to every endpoint
# subscribed to it, so this bounds the outbound requests one event can cause.
WEBHOOK_ENDPOINTS_PER_TENANT = env_int("WEBHOOK_ENDPOINTS_PER_TENANT", 20)
# Notifications: SMS goes through this provider ("local" writes each message to the log).
SMS_PROVIDER = env("SMS_PROVIDER", default="local")
# Email and SMS messages one organization may send one member per channel in 24 hours; past it,
# a notification on that channel is kept `suppressed` and not sent (the in-app inbox has none).
NOTIFICATIONS_PER_RECIPIENT_PER_DAY = env_int("NOTIFICATIONS_PER_RECIPIENT_PER_DAY", 50)
# An email or SMS notification still pending this long after its last change is sent by beat's
# sweep (its task's message was lost, or its channel's last failure may have passed); one still
# pending after NOTIFICATIONS_DELIVERY_HOURS is given up (`failed`).
NOTIFICATIONS_RETRY_AFTER_SECONDS = env_int(
    "NOTIFICATIONS_RETRY_AFTER_SECONDS", 60, minimum=1, maximum=_SECONDS_MAX
)
NOTIFICATIONS_DELIVERY_HOURS = env_int(
    "NOTIFICATIONS_DELIVERY_HOURS", 24, minimum=1, maximum=_HOURS_MAX
)
# Notifications (the in-app inbox, and the email and SMS ones' delivery records) older than this
# are deleted by beat, daily: every public event writes some, for each member of the roles it
# concerns. One still waiting to be sent is kept until it is sent or given up.
NOTIFICATIONS_RETENTION_DAYS = env_int(
    "NOTIFICATIONS_RETENTION_DAYS", 180, minimum=1, maximum=_DAYS_MAX
)
# A notification is `sending` from its claim until its channel took it. One still sending this
# long lost its worker (stopped, killed, its machine gone) and goes back to pending for the
# sweep: longer than any send takes (an SMTP exchange is a few EMAIL_TIMEOUTs at most), or a
# slow send would be made twice.
NOTIFICATIONS_SENDING_LEASE_SECONDS = env_int(
    "NOTIFICATIONS_SENDING_LEASE_SECONDS", 600, minimum=60, maximum=_SECONDS_MAX
)
# SMS goes only to a number its member confirmed with a code sent to it. Codes go to numbers
# nobody confirmed yet, so they are bounded: per member of an organization, and per number
# across the platform, in any 24 hours (and one a minute).
PHONE_CONFIRMATION_CODES_PER_DAY = env_int("PHONE_CONFIRMATION_CODES_PER_DAY", 5)
PHONE_CONFIRMATION_CODES_PER_NUMBER_PER_DAY = env_int(
    "PHONE_CONFIRMATION_CODES_PER_NUMBER_PER_DAY", 10
)

# LLM gateway (playground.gateway; docs/gateway.md). Upstream keys are never settings: each
# provider names the environment variable holding its key (Provider.api_key_env): setting
# OPENAI_API_KEY or ANTHROPIC_API_KEY sends the seeded models of that provider upstream.
# False: every model is served by the local provider, whatever the catalogue says.
GATEWAY_UPSTREAMS_ENABLED = env_bool("GATEWAY_UPSTREAMS_ENABLED", True)
GATEWAY_CURRENCY = env_text("GATEWAY_CURRENCY", "USD", valid=_CURRENCY, expected=_CURRENCY_EXPECTED)
GATEWAY_DEFAULT_MODEL = env("GATEWAY_DEFAULT_MODEL", default="gpt-3.5-turbo")
# What one organization may keep of prompt templates, projects and orchestration templates
# (409 CONFLICT past it; deleting makes room): each is rows in the platform's database.
PROMPT_TEMPLATES_PER_TENANT = env_int("PROMPT_TEMPLATES_PER_TENANT", 1000)
PROJECTS_PER_TENANT = env_int("PROJECTS_PER_TENANT", 1000)
ORCHESTRATION_TEMPLATES_PER_TENANT = env_int("ORCHESTRATION_TEMPLATES_PER_TENANT", 1000)
# Orchestration runs and workflow jobs one organization may have pending or running at once
# (409 CONFLICT past it; a run or job that ends, or is cancelled, makes room): the workers are
# shared, and without a bound one organization could queue enough work to hold them all.
ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT = env_int("ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT", 20)
WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT = env_int("WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT", 10)
# Versions one prompt template may have (409 CONFLICT past it): versions are immutable and
# never deleted, so a template that needs more is copied into a new one.
PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE = env_int(
    "PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE", 1000, minimum=1
)
# Back-off before retry n (seconds, doubled each time, with up to 25 % jitter); an upstream's
# Retry-After is honoured up to GATEWAY_RETRY_AFTER_MAX_SECONDS.
GATEWAY_RETRY_BACKOFF_SECONDS = env_float("GATEWAY_RETRY_BACKOFF_SECONDS", 0.5)
GATEWAY_RETRY_AFTER_MAX_SECONDS = env_float("GATEWAY_RETRY_AFTER_MAX_SECONDS", 10.0)
# Cooldown (shared through the cache by every process): after this many failed calls within the
# window an upstream model is skipped for GATEWAY_COOLDOWN_SECONDS.
GATEWAY_COOLDOWN_FAILURES = env_int("GATEWAY_COOLDOWN_FAILURES", 3, minimum=1)
GATEWAY_COOLDOWN_WINDOW_SECONDS = env_int(
    "GATEWAY_COOLDOWN_WINDOW_SECONDS", 60, minimum=1, maximum=_SECONDS_MAX
)
GATEWAY_COOLDOWN_SECONDS = env_int("GATEWAY_COOLDOWN_SECONDS", 30, minimum=1, maximum=_SECONDS_MAX)
# The most of an upstream's answer the gateway reads: a JSON answer's body (bytes, decoded),
# and a stream's longest line and its whole text (characters). Past it the answer is a bad
# response (502 `bad_response`; a stream ends with its error chunk), so that no upstream, broken
# or hostile, can make a worker hold gigabytes or spin on one endless line.
GATEWAY_UPSTREAM_MAX_BYTES = env_int("GATEWAY_UPSTREAM_MAX_BYTES", 16 * 1024 * 1024, minimum=1)
# Limits of one chat request.
GATEWAY_MAX_MESSAGES = env_int("GATEWAY_MAX_MESSAGES", 256, minimum=1)
# Each process keeps the active catalogue this many seconds (a change through the admin clears
# the changing process's copy at once; 0: read on every call).
GATEWAY_CATALOGUE_CACHE_SECONDS = env_float("GATEWAY_CATALOGUE_CACHE_SECONDS", 5.0)
GATEWAY_MAX_STOP_SEQUENCES = 4
# A call's reservation not settled this many seconds after it was made is taken for a call
# whose process died (a web worker killed mid-call): beat gives its tokens back. A call that
# outlives it settles by its usage alone, so a short lease never miscounts.
GATEWAY_RESERVATION_LEASE_SECONDS = env_int(
    "GATEWAY_RESERVATION_LEASE_SECONDS", 900, minimum=1, maximum=_SECONDS_MAX
)
# Under ASGI (playground.serving.GatewayFront) the gateway's request path (auth, tenant,
# throttle, validation, reservation) runs on this many long-lived threads per process; the
# upstream calls wait on the event loop, not on these.
GATEWAY_REQUEST_THREADS = env_int("GATEWAY_REQUEST_THREADS", 8, minimum=1, maximum=1024)
# A streamed answer sent from a request thread (an audit export, an artifact download) ends
# when its client takes no piece of it for this long, giving the thread back (as nginx's
# send_timeout): without it, clients that open exports and stop reading hold every thread.
STREAM_SEND_TIMEOUT_SECONDS = env_float("STREAM_SEND_TIMEOUT_SECONDS", 60.0, minimum=0.001)
# Under ASGI the gateway's settlements (the call's statement, after the upstream answered) run on
# this many long-lived threads per process. Each of these threads and of the request threads
# keeps a database connection: a web process holds up to their sum. (Read from SETTLE_THREADS
# before this setting had its name.)
GATEWAY_SETTLE_THREADS = env_int(
    "GATEWAY_SETTLE_THREADS",
    env_int("SETTLE_THREADS", 4, minimum=1, maximum=1024),
    minimum=1,
    maximum=1024,
)
# A settlement that meets the database unavailable (a restart, a failover) is tried again for
# up to this many seconds, so the tokens the upstream spent are recorded, once; past it the call
# fails as before and its reservation comes back with the lease.
GATEWAY_SETTLE_RETRY_SECONDS = env_float("GATEWAY_SETTLE_RETRY_SECONDS", 30.0)

# Billing (billing/; docs/billing.md). Plans are priced in BILLING_CURRENCY (the seeded
# catalogue's); a plan billing the gateway's costs needs it equal to GATEWAY_CURRENCY.
BILLING_CURRENCY = env_text("BILLING_CURRENCY", "USD", valid=_CURRENCY, expected=_CURRENCY_EXPECTED)
# Invoice numbers: <PREFIX>-<year of issue>-<sequence>, gapless per tenant, never restarted.
BILLING_INVOICE_PREFIX = env_text(
    "BILLING_INVOICE_PREFIX",
    "INV",
    # Numbers are 40 characters at most (prefix-YYYY-number); CN is the credit notes'.
    valid=lambda raw: matching(r"[A-Za-z0-9][A-Za-z0-9_-]{0,11}")(raw) and raw.upper() != "CN",
    expected="1 to 12 letters, digits, - or _ (first a letter or digit), not CN",
)
# An issued invoice is due this many days later; unpaid after that, it is overdue.
BILLING_INVOICE_DUE_DAYS = env_int("BILLING_INVOICE_DUE_DAYS", 14, maximum=_DAYS_MAX)
# Background jobs (orchestration runs, workflows; docs/orchestration.md). A worker holds a job
# under a lease of JOBS_LEASE_SECONDS, renewed at each phase or batch row; longer than the
# slowest gateway call (a provider's timeout times its attempts). A job whose lease expired
# (its worker died) is queued again by the reaper, JOBS_MAX_ATTEMPTS claims in all, then
# failed. A pending job whose task has not started after JOBS_REQUEUE_AFTER_SECONDS is sent
# again (a lost message); claims make duplicates harmless.
JOBS_LEASE_SECONDS = env_int("JOBS_LEASE_SECONDS", 600, minimum=1, maximum=_SECONDS_MAX)
JOBS_MAX_ATTEMPTS = env_int("JOBS_MAX_ATTEMPTS", 3, minimum=1)
JOBS_REQUEUE_AFTER_SECONDS = env_int(
    "JOBS_REQUEUE_AFTER_SECONDS", 900, minimum=1, maximum=_SECONDS_MAX
)
# A workflow's input and output bounds.
WORKFLOW_BATCH_MAX_ROWS = 1000
WORKFLOW_REPORT_MAX_DAYS = env_int("WORKFLOW_REPORT_MAX_DAYS", 366, minimum=1, maximum=_DAYS_MAX)

# Security (security/; docs/security.md). A burst of locked-out logins (django-axes refusals)
# against one organization's members, this many within one window, opens an
# unauthorized_access incident there (once per window).
SECURITY_LOCKOUT_BURST_THRESHOLD = env_int("SECURITY_LOCKOUT_BURST_THRESHOLD", 10, minimum=1)
SECURITY_LOCKOUT_BURST_WINDOW_MINUTES = env_int(
    "SECURITY_LOCKOUT_BURST_WINDOW_MINUTES", 15, minimum=1, maximum=_MINUTES_MAX
)
# The security dashboard's targets: above this average resolution time, and below this
# compliance score, it recommends action.
SECURITY_RESOLUTION_TARGET_HOURS = env_int(
    "SECURITY_RESOLUTION_TARGET_HOURS", 24, minimum=1, maximum=_HOURS_MAX
)
SECURITY_COMPLIANCE_TARGET_SCORE = env_int("SECURITY_COMPLIANCE_TARGET_SCORE", 70, maximum=100)

# Dunning (billing.services.dunning): an invoice unpaid after its due date is overdue; this
# many days after the due date the organization is suspended ("Payment overdue") until paid.
BILLING_SUSPEND_AFTER_DAYS = env_int("BILLING_SUSPEND_AFTER_DAYS", 14, maximum=_DAYS_MAX)
# The payment provider of new checkouts and charges (billing/providers): `local` is the
# embedded default, with its hosted checkout page and test payment methods.
BILLING_PAYMENT_PROVIDER = env("BILLING_PAYMENT_PROVIDER", default="local")
# The secret the local provider signs its events with (default: derived from SECRET_KEY).
BILLING_LOCAL_WEBHOOK_SECRET = env("BILLING_LOCAL_WEBHOOK_SECRET", default="")
# A checkout session not completed within this many hours expires.
BILLING_CHECKOUT_EXPIRY_HOURS = env_int(
    "BILLING_CHECKOUT_EXPIRY_HOURS", 24, minimum=1, maximum=_HOURS_MAX
)


def _is_broker(raw: str) -> bool:
    """A kombu transport's address: `redis://...`, `amqp://...`, `sqla+postgresql://...`."""
    return "://" in raw and re.split(r"[+:]", raw, maxsplit=1)[0] in TRANSPORT_ALIASES


# Celery: Redis when CELERY_BROKER_URL / REDIS_URL is given, else an embedded file-system transport.
# A broker kombu has no transport for started; every task's publish then failed (logged, the
# task lost) and the workers never connected.
CELERY_BROKER_URL = (
    env_text(
        "CELERY_BROKER_URL",
        "",
        valid=_is_broker,
        expected="a broker address kombu has a transport for (redis://..., amqp://...)",
    )
    or REDIS_URL
    or "filesystem://localhost//"
)
CELERY_BROKER_TRANSPORT_OPTIONS = {}
# How long a publish may spend connecting to the broker, its tries included. A connection to a
# Redis that stopped answering fails after REDIS_SOCKET_TIMEOUT; with Celery's 4 s here a
# publish tried again until 4.7 s had passed, and the web request whose commit sends the task
# waited for it. One try now (a broker that refuses is still tried again at once, by Celery's
# publish retries). A worker's own connection waits for the broker as long as it takes.
_BROKER_CONNECT_BUDGET = max(REDIS_SOCKET_TIMEOUT, REDIS_CONNECT_TIMEOUT)
CELERY_BROKER_CONNECTION_TIMEOUT = _BROKER_CONNECT_BUDGET if _BROKER_CONNECT_BUDGET > 0 else 4.0
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    _control_dir = VAR_DIR / "celery" / "control"
    for _dir in (_queue_dir, _processed_dir, _control_dir):
        _dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        # Broadcast (control) messages; kombu's default is ./control in the working directory.
        "control_folder": str(_control_dir),
        "store_processed": False,
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Message priorities on Redis (docs/orchestration.md): `priority_steps` gives each priority
    # its own list and the worker takes the highest first (Celery's 0 is the highest: tasks
    # sent without one, the platform's own); `queue_order_strategy` orders between queues.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        # A publish (a web request's on_commit, a task's) gives up on a broker that stopped
        # answering instead of waiting for ever; a worker's BRPOP reads only once its socket
        # is readable, so its wait for messages is not cut by this.
        **_REDIS_TIMEOUTS,
    }
# Celery's Django fix-up closes the database connections around every task unless this is set:
# a reconnection per task (about 6 ms here, more over a network). Workers keep theirs as the
# web processes do (CONN_MAX_AGE, a closed one replaced before the task: config.connections),
# closing them every 2 x this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 500, minimum=1)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Synced into django-celery-beat's tables at beat start; staff can change them in the admin.
CELERY_BEAT_SCHEDULE = {
    "accounts.purge-expired-auth-tokens": {
        "task": "accounts.tasks.purge_expired_auth_tokens",
        "schedule": crontab(minute=17),
    },
    "accounts.flush-api-key-usage": {
        "task": "accounts.tasks.flush_api_key_usage",
        "schedule": timedelta(seconds=API_KEY_USAGE_FLUSH_SECONDS),
    },
    # Sealing also runs on commit after events are recorded; this catches anything missed.
    "audit.seal-chains": {
        "task": "audit.tasks.seal_audit_chains",
        "schedule": timedelta(minutes=1),
    },
    # Quota periods end at month starts; resets claim due tenants only, so a frequent run is
    # cheap and a missed one catches up.
    "tenants.reset-due-quotas": {
        "task": "tenants.tasks.reset_due_quotas",
        "schedule": crontab(minute="*/5"),
    },
    "tenants.sync-api-call-counters": {
        "task": "tenants.tasks.sync_api_call_counters",
        "schedule": timedelta(minutes=1),
    },
    "tenants.prune-idempotency-keys": {
        "task": "tenants.tasks.prune_idempotency_keys",
        "schedule": crontab(minute=29),
    },
    # Also kicked on commit whenever deliveries are written; this catches retries coming due.
    "notifications.send-webhooks": {
        "task": "notifications.tasks.send_webhooks",
        "schedule": timedelta(seconds=WEBHOOK_RELAY_INTERVAL_SECONDS),
    },
    "notifications.prune-webhook-deliveries": {
        "task": "notifications.tasks.prune_webhook_deliveries",
        "schedule": crontab(hour=3, minute=41),
    },
    # Email and SMS notifications are sent on commit; this sends those whose task never came
    # and tries again those whose channel was down.
    "notifications.deliver-overdue-notifications": {
        "task": "notifications.tasks.deliver_overdue_notifications",
        "schedule": timedelta(minutes=1),
    },
    "notifications.prune-notifications": {
        "task": "notifications.tasks.prune_notifications",
        "schedule": crontab(hour=3, minute=47),
    },
    "notifications.prune-phone-confirmations": {
        "task": "notifications.tasks.prune_phone_confirmations",
        "schedule": crontab(minute=43),
    },
    # Periods end at month starts (and trials whenever they end); due subscriptions only, so
    # a frequent run is cheap and a missed one catches up.
    "billing.generate-invoices": {
        "task": "billing.tasks.generate_invoices",
        "schedule": crontab(minute="*/15"),
    },
    "billing.run-dunning": {
        "task": "billing.tasks.run_dunning",
        "schedule": crontab(minute=7),
    },
    # Jobs whose worker died (an expired lease) are resumed or failed; lost messages resent.
    "playground.reap-stalled-jobs": {
        "task": "playground.tasks.reap_stalled_jobs",
        "schedule": timedelta(minutes=1),
    },
    # Reservations of gateway calls whose process died before settling are given back.
    "playground.release-expired-reservations": {
        "task": "playground.tasks.release_expired_reservations",
        "schedule": timedelta(minutes=1),
    },
    # Personal data breaches: reminders 24 h before the 72-hour deadline and once it passed.
    # Tickets' SLA breaches are marked (and urgent ones escalated) within a minute.
    "support.mark-sla-breaches": {
        "task": "support.tasks.mark_sla_breaches",
        "schedule": crontab(minute="*"),
    },
    "analytics.flush-request-facts": {
        "task": "analytics.tasks.flush_request_facts",
        "schedule": timedelta(seconds=ANALYTICS_FLUSH_SECONDS),
    },
    "analytics.build-rollups": {
        "task": "analytics.tasks.build_rollups",
        "schedule": crontab(minute="*"),
    },
    "analytics.prune-raw-facts": {
        "task": "analytics.tasks.prune_raw_facts",
        "schedule": crontab(minute=17, hour=3),
    },
    # A draw rolls its own budget first; this keeps idle budgets' periods current.
    "support.roll-budgets": {
        "task": "support.tasks.roll_budgets",
        "schedule": crontab(minute="*/5"),
    },
    "security.remind-breach-deadlines": {
        "task": "security.tasks.remind_breach_deadlines",
        "schedule": crontab(minute="*/10"),
    },
    "security.detect-lockout-bursts": {
        "task": "security.tasks.detect_lockout_bursts",
        "schedule": crontab(minute="*/5"),
    },
    # Every organization's audit chain recomputed; a break opens a critical incident.
    "security.detect-broken-chains": {
        "task": "security.tasks.detect_broken_chains",
        "schedule": crontab(hour=2, minute=53),
    },
    "audit.issue-checkpoints": {
        "task": "audit.tasks.issue_audit_checkpoints",
        "schedule": crontab(minute="*/15"),
    },
}

LOG_LEVEL = env_text(
    "LOG_LEVEL",
    "INFO",
    valid=lambda raw: raw.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    expected="DEBUG, INFO, WARNING, ERROR or CRITICAL",
).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.request_context.RequestIDLogFilter"}},
    "formatters": {
        "standard": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "standard",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # One INFO line per outbound webhook request is noise; attempts are recorded in the
        # database (notifications.WebhookAttempt).
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
