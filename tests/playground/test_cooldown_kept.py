"""Each process keeps what it read of the upstreams' cooldowns (playground.cooldown), stamped
with the principals' epoch (config.epoch): a kept state answers only while the epoch this process
has seen is its stamp, a cooldown's start and end move the epoch, and a gateway call whose own
admission sees the epoch move reads the state again before calling anyone. So a cooldown
started or ended by any process is acted on by the next call, as when every call read it.

With Redis only (the epoch lives there); the SQLite run keeps nothing."""

import time

import pytest
import time_machine

from config import epoch
from config.exceptions import AIServiceError
from config.metering import admit
from config.redis import redis_cache, redis_client
from playground import cooldown
from playground.models import GatewayCall, GatewayReservation
from playground.services.gateway import ChatInput, gateway_reserve
from tests.conftest import assert_envelope

from .test_gateway_upstreams import URL, chat, openai_model, tokens_used
from .upstream import FakeUpstream, Status

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01
    settings.GATEWAY_COOLDOWN_FAILURES = 3
    settings.GATEWAY_COOLDOWN_SECONDS = 30


@pytest.fixture
def upstream():
    with FakeUpstream(reply="Hello from upstream.", chunks=1) as server:
        yield server


@pytest.fixture
def reads(monkeypatch):
    """How many times the cooldowns were read from the cache."""
    counted = []
    real = cooldown.cache.get_many

    def get_many(keys, *args, **kwargs):
        counted.append(keys)
        return real(keys, *args, **kwargs)

    monkeypatch.setattr(cooldown.cache, "get_many", get_many)
    return counted


def an_admission():
    """What every request's throttle and every gateway call's tokens window do: one admission,
    which shows this process the epoch."""
    admit([])
    return epoch.observed()


def started_elsewhere(name, seconds=30):
    """Another process's cooldown start: the state in Redis and the epoch moved, nothing told
    to this process."""
    cache = redis_cache()
    cooldown.cache.set(f"gateway:cooldown:{name}", time.time() + seconds, seconds)
    redis_client(cache).incr(epoch.epoch_key(cache))


@pytest.mark.redis
def test_a_kept_state_answers_until_the_epoch_moves(reads):
    seen = an_admission()

    first = cooldown.cooling_down(["model-a", "model-b"])
    again = cooldown.cooling_down(["model-b", "model-a"])

    assert first.names == again.names == frozenset()
    assert len(reads) == 1
    assert (first.kept_at, again.kept_at) == (None, seen)
    assert again.confirmed()

    started_elsewhere("model-a")
    unseen = cooldown.cooling_down(["model-a"])  # no admission since: still the kept answer
    assert unseen.names == frozenset() and len(reads) == 1
    assert unseen.confirmed()  # as of the last admission this process saw

    an_admission()
    assert not unseen.confirmed()
    assert cooldown.cooling_down(["model-a"]).names == {"model-a"}
    assert len(reads) == 2


@pytest.mark.redis
def test_a_model_not_read_yet_is_read(reads):
    an_admission()
    cooldown.cooling_down(["model-a"])
    cooldown.cooling_down(["model-a", "model-c"])
    assert len(reads) == 2
    assert cooldown.cooling_down(["model-c"]).kept_at is not None
    assert len(reads) == 2


@pytest.mark.redis
def test_a_kept_cooldown_ends_when_its_time_is_up(reads, settings):
    an_admission()
    settings.GATEWAY_COOLDOWN_FAILURES = 1
    settings.GATEWAY_COOLDOWN_SECONDS = 30
    assert cooldown.record_failures(["model-a"]) == ["model-a"]
    an_admission()
    assert cooldown.cooling_down(["model-a"]).names == {"model-a"}

    with time_machine.travel(time.time() + 31, tick=False):
        ended = cooldown.cooling_down(["model-a"])

    assert ended.names == frozenset() and ended.kept_at is not None
    assert len(reads) == 1


@pytest.mark.redis
def test_a_kept_state_is_read_again_after_the_principals_age(reads, settings):
    settings.PRINCIPAL_CACHE_SECONDS = 0.05
    an_admission()
    cooldown.cooling_down(["model-a"])
    assert cooldown.cooling_down(["model-a"]).kept_at is not None
    time.sleep(0.1)

    assert cooldown.cooling_down(["model-a"]).kept_at is None
    assert len(reads) == 2


@pytest.mark.redis
def test_a_start_and_a_clear_move_the_epoch(settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 1
    before = an_admission()

    cooldown.record_failures(["model-a"])
    started = an_admission()
    cooldown.clear("model-a")
    cleared = an_admission()

    assert before < started < cleared
    assert cooldown.cooling_down(["model-a"]).names == frozenset()


def test_failures_that_start_no_cooldown_leave_the_epoch(settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 3
    before = an_admission()
    cooldown.record_failures(["model-a"])
    assert an_admission() == before


def test_without_keeping_every_check_reads(reads, settings):
    settings.PRINCIPAL_CACHE_SECONDS = 0
    an_admission()
    for _ in range(3):
        assert cooldown.cooling_down(["model-a"]).kept_at is None
    assert len(reads) == 3


@pytest.mark.redis
def test_the_next_call_sees_a_cooldown_another_process_started(owner, upstream, reads):
    model = openai_model(upstream)
    served = owner.client.post(URL, chat(model), format="json")
    assert served.status_code == 200, served.content
    again = owner.client.post(URL, chat(model), format="json")
    assert again.status_code == 200, again.content
    assert len(upstream.requests) == 2
    read_before = len(reads)

    started_elsewhere(model.name)
    skipped = owner.client.post(URL, chat(model), format="json")

    assert_envelope(skipped, 503, "AI_SERVICE_ERROR")
    assert len(upstream.requests) == 2
    assert len(reads) == read_before + 1  # the request's admission saw the epoch move
    assert tokens_used(owner.tenant) == sum(
        GatewayCall.objects.filter(tenant=owner.tenant).values_list("total_tokens", flat=True)
    )


@pytest.mark.redis
def test_a_call_whose_admission_sees_the_epoch_move_reads_again_and_gives_back(owner, upstream):
    """A call made where nothing was admitted just before (a Celery worker's phase): the kept
    state answers, and the call's own tokens-window admission is what confirms it."""
    model = openai_model(upstream)
    an_admission()
    assert cooldown.cooling_down([model.name]).names == frozenset()
    started_elsewhere(model.name)

    with pytest.raises(AIServiceError) as refused:
        gateway_reserve(
            tenant=owner.tenant,
            user_id=owner.user.pk,
            api_key=None,
            chat=ChatInput(model=model.name, messages=({"role": "user", "content": "Hi"},)),
        )

    assert refused.value.status_code == 503
    assert refused.value.details["model"] == model.name
    assert tokens_used(owner.tenant) == 0
    assert not GatewayReservation.objects.filter(tenant=owner.tenant).exists()
    assert upstream.requests == []


def test_a_cooldown_started_here_is_acted_on_by_the_next_call(owner, upstream, settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 2
    model = openai_model(upstream, max_retries=1)
    assert owner.client.post(URL, chat(model), format="json").status_code == 200
    upstream.script(Status(500), Status(500))

    failed = owner.client.post(URL, chat(model), format="json")
    assert_envelope(failed, 502, "AI_SERVICE_ERROR")
    skipped = owner.client.post(URL, chat(model), format="json")

    assert_envelope(skipped, 503, "AI_SERVICE_ERROR")
    assert len(upstream.requests) == 3
