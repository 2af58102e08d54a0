"""Settings as a process sees them at start-up: production refuses weak secrets and passes
`check --deploy`; with no environment at all the project runs on its embedded defaults."""

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.metering import Window
from config.settings.base import INSECURE_DEV_SECRET_KEY

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def settings_seen(env: dict[str, str], report: str, *, setup: bool = False):
    """What a process started with `env` reports: `report`, a Python expression over `settings`
    (and, with `setup`, the Celery `app`, after django.setup()), as JSON."""
    prelude = "import django; django.setup(); from config.celery import app; " if setup else ""
    script = f"import json; {prelude}from django.conf import settings; print(json.dumps({report}))"

    result = run(["-c", script], env)

    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def settings_env(**variables: str) -> dict[str, str]:
    """This environment, on the test settings, with `variables` set."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **variables}


def refused_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A process started with `env` that must stop while Django sets up (its settings refused)."""
    result = run(["-c", "import django; django.setup()"], env)
    assert result.returncode != 0, result.stdout
    return result


def production_env(secret_key: str | None) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production"}
    env["ALLOWED_HOSTS"] = "api.example.com"
    env.pop("SECRET_KEY", None)
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    return env


@pytest.mark.parametrize(
    "secret_key",
    [None, "", INSECURE_DEV_SECRET_KEY, "too-short-" + "x" * 30, secrets.token_urlsafe(32)[:49]],
    ids=["missing", "empty", "dev-default", "short", "49-chars"],
)
def test_production_refuses_to_start_without_a_real_secret_key(secret_key):
    result = run(["manage.py", "check"], production_env(secret_key))

    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY" in result.stderr


def test_production_with_a_random_key_passes_the_deploy_checks():
    secret_key = secrets.token_urlsafe(48)
    assert len(secret_key) == 64

    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(secret_key)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("socket", "connect", "expected"),
    [("2.5", "0.5", [2.5, 0.5]), ("0", "-1", [None, None])],
    ids=["seconds", "zero-or-less-is-none"],
)
def test_the_redis_timeouts_reach_the_cache_and_the_broker(socket, connect, expected):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "REDIS_SOCKET_TIMEOUT": socket,
        "REDIS_CONNECT_TIMEOUT": connect,
    }
    env.pop("CELERY_BROKER_URL", None)
    report = (
        "[[options[name] for name in ('socket_timeout', 'socket_connect_timeout')] "
        "for options in (settings.CACHES['default']['OPTIONS'], "
        "settings.CELERY_BROKER_TRANSPORT_OPTIONS)]"
    )

    assert settings_seen(env, report) == [expected, expected]


def test_no_environment_runs_on_the_embedded_defaults():
    # Only what a shell needs to find and run the interpreter: no DATABASE_URL, REDIS_URL,
    # CELERY_BROKER_URL, SECRET_KEY or anything else the settings read.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
    report = (
        "{'engine': settings.DATABASES['default']['ENGINE'], "
        "'cache': settings.CACHES['default']['BACKEND'], "
        "'broker': settings.CELERY_BROKER_URL, "
        "'celery_broker': app.conf.broker_url, "
        "'debug': settings.DEBUG}"
    )

    reported = settings_seen(env, report, setup=True)
    assert reported["engine"] == "django.db.backends.sqlite3"
    assert reported["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert reported["broker"].startswith("filesystem://")
    assert reported["celery_broker"].startswith("filesystem://")
    assert reported["debug"] is True


def test_the_walking_tests_know_every_project_app():
    from tests.project import PROJECT_APPS

    # Found from INSTALLED_APPS: every app of the repository, and nothing installed from outside.
    assert set(PROJECT_APPS) >= {
        "accounts",
        "tenants",
        "audit",
        "billing",
        "security",
        "playground",
        "support",
        "analytics",
        "notifications",
    }


# Numbers and switches from the environment --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        # Trusted the client's own X-Forwarded-For entry (the second from the left).
        ("TRUSTED_PROXY_COUNT", "-1", "TRUSTED_PROXY_COUNT must be from 0 to 64; it is '-1'."),
        # Pruned every delivery older than now, those not sent yet included.
        ("WEBHOOK_DELIVERY_RETENTION_DAYS", "0", "must be from 1 to 36500; it is '0'."),
        # Every invitation failed with an OverflowError (a 500).
        ("INVITATION_TTL_DAYS", "10000000", "must be from 1 to 36500; it is '10000000'."),
        ("JOBS_LEASE_SECONDS", "ten", "JOBS_LEASE_SECONDS must be a whole number; it is 'ten'."),
        ("JOBS_MAX_ATTEMPTS", "1.5", "JOBS_MAX_ATTEMPTS must be a whole number; it is '1.5'."),
        ("QUOTA_WARNING_THRESHOLD", "nan", "must be from 0.0 to 100; it is 'nan'."),
        ("WEBHOOK_TIMEOUT_SECONDS", "inf", "WEBHOOK_TIMEOUT_SECONDS must be from 0.001 to "),
        ("WEBHOOK_RETRY_SCHEDULE_SECONDS", "5, -1", "must be from 0 to 3153600000; it is '-1'."),
        ("GATEWAY_REQUEST_THREADS", "0", "GATEWAY_REQUEST_THREADS must be from 1 to 1024"),
        # Read as false: webhooks to private addresses stayed refused, as they should, but the
        # same typo in a switch that defaults to on (SECURE_SSL_REDIRECT) turned it off.
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "Ture", "must be true or false (yes/no, on/off, "),
        # Text. Each of these started and then failed every request (a 500), or refused them
        # all, or failed what used it: checkouts, SMS, audit exports, emailed links.
        ("API_RATE_USER", "100/month", "API_RATE_USER must be a rate of at least one request"),
        ("API_RATE_ANON", "-1/min", "a whole number, / and s, min, hour or day (100/min); it is"),
        ("API_RATE_PLAN_FREE", "0/hour", "API_RATE_PLAN_FREE must be a rate of at least one "),
        ("REDIS_URL", "localhost:6379", "must be a redis://, rediss:// or unix:// address; it is"),
        ("PUBLIC_BASE_URL", "cp.example.com", "must be an absolute http:// or https:// address"),
        ("PUBLIC_BASE_URL", "https://cp.example.com/?next=1", "without query or fragment; it is"),
        ("INVITATION_ACCEPT_URL", "https://app.example.com:0/", "https:// address; it is 'https"),
        ("INVITATION_ACCEPT_URL", "javascript:alert(1)//", "an absolute http:// or https://"),
        ("GATEWAY_CURRENCY", "usd", "GATEWAY_CURRENCY must be an ISO 4217 currency code, as USD"),
        ("BILLING_CURRENCY", "Dollars", "BILLING_CURRENCY must be an ISO 4217 currency code"),
        ("BILLING_INVOICE_PREFIX", "INVOICE-OF-ACME", "1 to 12 letters, digits, - or _ (first"),
        ("BILLING_INVOICE_PREFIX", "cn", "(first a letter or digit), not CN; it is 'cn'."),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("DEFAULT_FROM_EMAIL", "Control Plane", "must be an email address, alone or as Name <"),
        ("BILLING_PAYMENT_PROVIDER", "stripe", "BILLING_PAYMENT_PROVIDER must be local; it is "),
        ("SMS_PROVIDER", "acme.sms.Provider", "SMS_PROVIDER names no class: No module named"),
        ("SMS_PROVIDER", "notifications.channels.logger", "is not a class with a send() method."),
        # Every task's publish failed (the task lost) and no worker connected.
        ("CELERY_BROKER_URL", "localhost:6379", "a broker address kombu has a transport for"),
        ("CELERY_BROKER_URL", "rabbit://guest@mq//", "(redis://..., amqp://...); it is 'rabbit:"),
        ("EMAIL_HOST", "smtp://mail.example.com", "must be a host name or address, without "),
        ("EMAIL_PORT", "0", "EMAIL_PORT must be from 1 to 65535; it is '0'."),
        ("EMAIL_TIMEOUT", "0", "EMAIL_TIMEOUT must be from 0.001 to "),
        # Never matches a request's host: every request was a 400.
        ("ALLOWED_HOSTS", "https://api.example.com", "must list host names (api.example.com, "),
        ("ALLOWED_HOSTS", "localhost,api.example.com:443", "it has 'api.example.com:443'."),
        # Read from each process's working directory: a worker started elsewhere wrote a job's
        # artifacts (or, from VAR_DIR, the embedded database and queue) where the web process
        # never looked.
        ("ARTIFACTS_ROOT", "var/artifacts", "ARTIFACTS_ROOT must be an absolute path (/srv/"),
        (
            "VAR_DIR",
            "var",
            "VAR_DIR must be an absolute path (/srv/control-plane/...); it is 'var'",
        ),
        ("MEDIA_ROOT", "~/media", "MEDIA_ROOT must be an absolute path"),
        ("ATTACHMENTS_ROOT", "./attachments", "ATTACHMENTS_ROOT must be an absolute path"),
        ("STATIC_ROOT", "static", "STATIC_ROOT must be an absolute path"),
    ],
)
def test_a_value_out_of_its_range_stops_the_process_naming_it(name, raw, message):
    result = refused_start(settings_env(**{name: raw}))

    assert "django.core.exceptions.ImproperlyConfigured: " in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("raw", ["flase", "0n", "disabled"])
def test_production_refuses_a_security_switch_it_cannot_read(raw):
    env = production_env(secrets.token_urlsafe(48))
    env["SECURE_SSL_REDIRECT"] = raw

    result = run(["manage.py", "check"], env)

    assert result.returncode != 0, result.stdout
    assert f"SECURE_SSL_REDIRECT must be true or false (yes/no, on/off, 1/0); it is {raw!r}." in (
        result.stderr
    )


def test_a_switch_reads_the_usual_words_either_way(monkeypatch):
    from config.settings import base

    words = {"TRUE": True, " yes": True, "on": True, "1": True}
    words |= {"False": False, "no ": False, "OFF": False, "0": False}
    for raw, expected in words.items():
        monkeypatch.setenv("PLATFORM_TEST_SWITCH", raw)
        assert base.env_bool("PLATFORM_TEST_SWITCH", not expected) is expected, raw
    monkeypatch.setenv("PLATFORM_TEST_SWITCH", "")
    assert base.env_bool("PLATFORM_TEST_SWITCH", True) is True


@pytest.mark.postgres  # the pool is PostgreSQL's
def test_the_pool_cannot_be_smaller_than_its_minimum():
    env = settings_env(DATABASE_POOL="true", DATABASE_POOL_MIN_SIZE="8", DATABASE_POOL_MAX_SIZE="4")

    result = refused_start(env)

    assert "DATABASE_POOL_MAX_SIZE must be from 8 to " in result.stderr


def test_numbers_within_their_range_are_read_and_an_empty_one_is_its_default(monkeypatch):
    from config.settings import base

    monkeypatch.setenv("PLATFORM_TEST_NUMBER", " 7 ")
    assert base.env_int("PLATFORM_TEST_NUMBER", 3, minimum=7, maximum=7) == 7
    monkeypatch.setenv("PLATFORM_TEST_NUMBER", "")
    assert base.env_int("PLATFORM_TEST_NUMBER", 3) == 3
    assert base.env_float("PLATFORM_TEST_NUMBER", 0.5) == 0.5
    monkeypatch.delenv("PLATFORM_TEST_NUMBER")
    assert base.env_int_list("PLATFORM_TEST_NUMBER", [1]) == [1]
    monkeypatch.setenv("PLATFORM_TEST_NUMBER", "-2.5")
    assert base.env_float("PLATFORM_TEST_NUMBER", 1.0, minimum=None) == -2.5  # no lower bound
    with pytest.raises(ImproperlyConfigured, match=r"must be from 0\.0 to "):
        base.env_float("PLATFORM_TEST_NUMBER", 1.0)
    monkeypatch.setenv("PLATFORM_TEST_NUMBER", "5, 300 ,1800")
    assert base.env_int_list("PLATFORM_TEST_NUMBER", [1], maximum=1800) == [5, 300, 1800]
    with pytest.raises(ImproperlyConfigured, match="must be from 0 to 299; it is '300'"):
        base.env_int_list("PLATFORM_TEST_NUMBER", [1], maximum=299)
    monkeypatch.setenv("PLATFORM_TEST_NUMBER", "8")
    with pytest.raises(ImproperlyConfigured, match="PLATFORM_TEST_NUMBER must be from 0 to 7"):
        base.env_int("PLATFORM_TEST_NUMBER", 3, maximum=7)


def test_every_number_and_switch_the_settings_read_is_checked():
    """A number or switch read with django-environ's own casts (env.int, env.float, env.bool, a
    list cast to int) is not checked: every one goes through env_int, env_float, env_int_list
    or env_bool."""
    for module in sorted((PROJECT_ROOT / "config" / "settings").glob("*.py")):
        text = module.read_text()
        for unchecked in ("env.int(", "env.float(", "env.bool(", "cast=int", "cast=float"):
            assert unchecked not in text, f"{module.name} reads a number with {unchecked}"


def test_a_secret_that_is_not_a_key_is_refused_without_showing_it():
    env = settings_env(AUDIT_CHECKPOINT_KEY="c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0")  # 26 bytes

    result = refused_start(env)

    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.endswith("AUDIT_CHECKPOINT_KEY must be 32 bytes, base64-encoded; it is not.")
    assert env["AUDIT_CHECKPOINT_KEY"] not in result.stderr


def test_text_within_its_rules_is_read():
    key = base64.b64encode(bytes(range(32))).decode()
    env = settings_env()
    env |= {
        "API_RATE_ANALYTICS": " 5/s ",
        "LOG_LEVEL": "warning",
        "INVITATION_ACCEPT_URL": "https://app.example.com/#/accept?token=",
        "PUBLIC_BASE_URL": "https://example.com/control-plane",
        "BILLING_INVOICE_PREFIX": "ACME-INV",
        "DEFAULT_FROM_EMAIL": "billing@example.com",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "AUDIT_CHECKPOINT_KEY": key,
    }
    report = (
        "[settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['analytics'], settings.LOG_LEVEL, "
        "settings.INVITATION_ACCEPT_URL, settings.PUBLIC_BASE_URL, "
        "settings.BILLING_INVOICE_PREFIX, settings.DEFAULT_FROM_EMAIL, "
        "settings.AUDIT_CHECKPOINT_KEY]"
    )

    seen = settings_seen(env, report, setup=True)

    assert seen == [
        "5/s",
        "WARNING",
        "https://app.example.com/#/accept?token=",
        "https://example.com/control-plane",
        "ACME-INV",
        "billing@example.com",
        key,
    ]


def test_the_throttles_and_the_settings_read_a_rate_alike():
    from config.rates import parse_rate
    from config.settings import base

    for rate in ("5/s", "5/sec", "5/second", "10/m", "10/min", "2/h", "2/hour", "1/d", "1/day"):
        assert base._is_rate(rate)
        assert Window.from_rate("k", rate) == Window("k", *parse_rate(rate))
    for rate in ("10/month", "10/hours", "+5/min", "5 /min", "1_000/min", "\u0665/min", "5/MIN"):
        with pytest.raises(ValueError):
            parse_rate(rate)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("ALLOWED_HOSTS", " , ", "ALLOWED_HOSTS must be set in production: the host names served."),
        # Failed every email, invitations included, once sent.
        ("EMAIL_BACKEND", "django.core.mail.backends.smpt.EmailBackend", "names no class: No "),
        # Never matched an Origin header: forms posted from it were refused as forged.
        ("CSRF_TRUSTED_ORIGINS", "admin.example.com", "must list origins with their scheme"),
    ],
)
def test_production_refuses_hosts_origins_and_mail_it_cannot_use(name, raw, message):
    env = production_env(secrets.token_urlsafe(48)) | {name: raw}

    result = run(["manage.py", "check"], env)

    assert result.returncode != 0, result.stdout
    assert message in result.stderr.strip().splitlines()[-1]


def test_production_reads_hosts_and_origins_as_django_matches_them():
    env = production_env(secrets.token_urlsafe(48))
    env["ALLOWED_HOSTS"] = "api.example.com, .example.org,,[::1],10.0.0.1"
    env["CSRF_TRUSTED_ORIGINS"] = "https://admin.example.com,https://*.example.org:8443"

    seen = settings_seen(env, "[settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS]")

    assert seen == [
        ["api.example.com", ".example.org", "[::1]", "10.0.0.1"],
        ["https://admin.example.com", "https://*.example.org:8443"],
    ]


def test_the_mail_server_and_its_account_come_from_the_environment():
    env = settings_env()
    env |= {"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "587", "EMAIL_USE_TLS": "true"}
    env |= {"EMAIL_HOST_USER": "mailer", "EMAIL_HOST_PASSWORD": "p4ss word", "EMAIL_TIMEOUT": "3"}
    report = (
        "[settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS, "
        "settings.EMAIL_USE_SSL, settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD, "
        "settings.EMAIL_TIMEOUT]"
    )

    seen = settings_seen(env, report)

    assert seen == ["smtp.example.com", 587, True, False, "mailer", "p4ss word", 3.0]
    # Django sets no timeout: a server that stops answering would hold a sender for ever.
    assert settings_seen(os.environ | {"EMAIL_TIMEOUT": ""}, "settings.EMAIL_TIMEOUT") == 10.0


def test_starttls_and_tls_from_the_start_are_one_or_the_other():
    result = refused_start(settings_env(EMAIL_USE_TLS="yes", EMAIL_USE_SSL="on"))

    assert "EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be true" in result.stderr


@pytest.mark.parametrize(
    ("name", "raw", "shown"),
    [
        ("REDIS_URL", "redis//:s3cret@redis:6379/0", "it is 'redis//***@redis:6379/0'."),
        ("CELERY_BROKER_URL", "amqp:guest:s3cret@mq//", "it is 'amqp:***@mq//'."),
        ("CELERY_BROKER_URL", "rabbitmq://cp:s3cret@mq//", "it is 'rabbitmq://***@mq//'."),
    ],
)
def test_an_address_that_is_refused_is_shown_without_its_password(name, raw, shown):
    result = refused_start(settings_env(**{name: raw}))

    assert result.stderr.strip().splitlines()[-1].endswith(shown)
    assert "s3cret" not in result.stderr


def test_every_broker_kombu_has_a_transport_for_is_accepted():
    from config.settings import base

    for address in ("redis://redis:6379/1", "amqp://cp@mq//", "sqla+postgresql://db/cp"):
        assert base._is_broker(address), address
    for address in ("redis:/redis", "redis", "rabbit://mq//", "localhost:5672"):
        assert not base._is_broker(address), address
