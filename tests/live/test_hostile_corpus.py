"""The hostile corpus (tests/live/hostile_corpus.py) against the live quick start: no 5xx, every
error the envelope, every probe answered as it expects."""

import pytest

from .hostile_corpus import run

pytestmark = pytest.mark.live


def test_the_hostile_corpus_gets_no_5xx_and_only_envelopes(quick_start):
    outcomes = run(quick_start.url)

    failed = [
        f"{outcome.probe.name}: {'; '.join(outcome.problems)}"
        for outcome in outcomes
        if outcome.problems
    ]
    assert failed == []
    assert max(outcome.status for outcome in outcomes) < 500
    # The lockout probes reach the lock: the sixth failed login is refused as such.
    assert outcomes[-1].status == 429
    quick_start.assert_healthy()
