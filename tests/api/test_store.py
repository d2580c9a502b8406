"""DecisionStore: freshness, staleness, the desired-replicas fallback, unknown names."""

from __future__ import annotations

import math

import pytest

from scaler.api.store import DecisionStore, StaleMetricError, UnknownMetricError
from scaler.core import Reason, Signal
from scaler.metric_names import EXTERNAL_BY_SIGNAL, EXTERNAL_DESIRED_REPLICAS
from tests.api.conftest import MODELS, STALENESS, START, make_decision

QUEUE = EXTERNAL_BY_SIGNAL[Signal.QUEUE_DEPTH]


@pytest.fixture
def store() -> DecisionStore:
    """A store for the four homelab models."""
    return DecisionStore(MODELS, staleness_seconds=STALENESS, history=8)


def test_value_is_served_up_to_the_staleness_limit(store: DecisionStore) -> None:
    """A value made on data is served while now - time <= staleness."""
    store.publish(make_decision(desired=3))
    assert store.value(EXTERNAL_DESIRED_REPLICAS, "mistral-7b", START + STALENESS).value == 3


def test_value_past_the_limit_is_stale(store: DecisionStore) -> None:
    """Just past the staleness limit the value is refused (the API answers 503)."""
    store.publish(make_decision())
    with pytest.raises(StaleMetricError):
        store.value(QUEUE, "mistral-7b", START + STALENESS + 0.001)


def test_nothing_published_is_stale_not_unknown(store: DecisionStore) -> None:
    """A known model before the first tick is stale (503), not unknown (404)."""
    with pytest.raises(StaleMetricError):
        store.value(EXTERNAL_DESIRED_REPLICAS, "mixtral-8x7b", START)


def test_a_decision_without_data_keeps_the_last_good_signal_values(store: DecisionStore) -> None:
    """A no-data decision does not replace the last good signals; they are served until stale."""
    store.publish(make_decision(signals={Signal.QUEUE_DEPTH: 4.0}))
    store.publish(
        make_decision(time=START + 10, signals={}, demand=None, reasons=(Reason.NO_DATA,))
    )
    value = store.value(QUEUE, "mistral-7b", START + 20)
    assert (value.value, value.timestamp) == (4.0, START)


def test_fallback_keeps_desired_replicas_served_after_staleness(store: DecisionStore) -> None:
    """With the policy's fallback in force, desired replicas stay served past the limit."""
    store.publish(make_decision())
    late = START + STALENESS * 3
    store.publish(make_decision(time=late, desired=2, demand=None, reasons=(Reason.FALLBACK,)))
    assert store.value(EXTERNAL_DESIRED_REPLICAS, "mistral-7b", late).value == 2


def test_fallback_does_not_revive_stale_signal_values(store: DecisionStore) -> None:
    """The fallback covers only desired replicas; signal metrics stay 503 when stale."""
    store.publish(make_decision())
    late = START + STALENESS * 3
    store.publish(make_decision(time=late, demand=None, reasons=(Reason.FALLBACK,)))
    with pytest.raises(StaleMetricError):
        store.value(QUEUE, "mistral-7b", late)


def test_a_hold_without_fallback_turns_stale(store: DecisionStore) -> None:
    """Decisions without data and without fallback do not keep desired replicas fresh."""
    store.publish(make_decision())
    late = START + STALENESS * 3
    store.publish(make_decision(time=late, demand=None, reasons=(Reason.NO_DATA,)))
    with pytest.raises(StaleMetricError):
        store.value(EXTERNAL_DESIRED_REPLICAS, "mistral-7b", late)


def test_metric_names_are_case_insensitive(store: DecisionStore) -> None:
    """The HPA lowercases names; any case is accepted."""
    store.publish(make_decision())
    assert store.value("Scaler-Queue-Depth", "mistral-7b", START).value == 1.5


def test_signal_not_read_is_stale(store: DecisionStore) -> None:
    """A signal the model's decision has no value for is unavailable (503), not 0."""
    store.publish(make_decision(signals={Signal.QUEUE_DEPTH: 1.0}))
    with pytest.raises(StaleMetricError):
        store.value(EXTERNAL_BY_SIGNAL[Signal.REQUEST_RATE], "mistral-7b", START)


def test_a_true_zero_is_a_value(store: DecisionStore) -> None:
    """A measured 0 is returned as 0.0, not treated as missing."""
    store.publish(make_decision(signals={Signal.QUEUE_DEPTH: 0.0}))
    assert store.value(QUEUE, "mistral-7b", START).value == 0.0


@pytest.mark.parametrize(("metric", "model"), [("scaler-foo", "mistral-7b"), (QUEUE, "llama-70b")])
def test_unknown_metric_or_model_raises_unknown(
    store: DecisionStore, metric: str, model: str
) -> None:
    """An unserved metric or a model without a policy is unknown (404)."""
    with pytest.raises(UnknownMetricError, match="could not find the metric"):
        store.value(metric, model, START)


def test_publishing_an_unknown_model_raises(store: DecisionStore) -> None:
    """Only models with a policy are stored."""
    with pytest.raises(UnknownMetricError, match="no policy"):
        store.publish(make_decision("llama-70b"))


def test_recent_is_newest_first_and_bounded(store: DecisionStore) -> None:
    """History keeps the newest `history` decisions, newest first, cut to `limit`."""
    for i in range(10):
        store.publish(make_decision(time=START + i))
    assert [d.time for d in store.recent(3)] == [START + 9, START + 8, START + 7]
    assert len(store.recent()) == 8


def test_fresh_until_is_the_staleness_deadline(store: DecisionStore) -> None:
    """A fresh value says until when it holds: the good decision's time plus staleness."""
    store.publish(make_decision())
    assert store.value(QUEUE, "mistral-7b", START).fresh_until == START + STALENESS


def test_every_publish_changes_the_version(store: DecisionStore) -> None:
    """The version moves on each publish, so cached answers can tell they are outdated."""
    before = store.version
    store.publish(make_decision())
    store.publish(make_decision())
    assert store.version == before + 2


def test_stale_exactly_after_fresh_until() -> None:
    """value() answers up to and including fresh_until and refuses just after it, also when
    time + staleness rounds (0.2 s at Unix time): the API's cache relies on that bound."""
    store = DecisionStore(MODELS, staleness_seconds=0.2)
    store.publish(make_decision())
    deadline = store.value(QUEUE, "mistral-7b", START).fresh_until
    assert store.value(QUEUE, "mistral-7b", deadline).value == 1.5
    with pytest.raises(StaleMetricError):
        store.value(QUEUE, "mistral-7b", math.nextafter(deadline, math.inf))


def test_prepare_changes_nothing_readers_see_until_commit(store: DecisionStore) -> None:
    """A prepared tick is invisible (values, answers, history, version) until committed."""
    store.publish(make_decision(desired=1))
    before = (store.version, store.recent(), store.answer("mistral-7b", QUEUE))
    prepared = store.prepare([make_decision(m, time=START + 5, desired=4) for m in MODELS])
    assert store.value(EXTERNAL_DESIRED_REPLICAS, "mistral-7b", START + 5).value == 1
    assert store.latest("tinyllama") is None
    assert (store.version, store.recent(), store.answer("mistral-7b", QUEUE)) == before
    store.commit(prepared)
    assert {store.value(EXTERNAL_DESIRED_REPLICAS, m, START + 5).value for m in MODELS} == {4}
    assert store.version == before[0] + 1


def test_a_tick_is_one_publish(store: DecisionStore) -> None:
    """publish_all records every decision, in order, as one version step."""
    before = store.version
    store.publish_all(make_decision(m, time=START + i) for i, m in enumerate(MODELS))
    assert store.version == before + 1
    assert [d.model for d in store.recent()] == list(reversed(MODELS))


def test_committing_an_outdated_snapshot_raises(store: DecisionStore) -> None:
    """A snapshot prepared before another publish would drop it: commit refuses."""
    prepared = store.prepare([make_decision(desired=5)])
    store.publish(make_decision(desired=3))
    with pytest.raises(RuntimeError, match="outdated"):
        store.commit(prepared)
    assert store.value(EXTERNAL_DESIRED_REPLICAS, "mistral-7b", START).value == 3


def test_answers_are_rendered_for_servable_values_only(store: DecisionStore) -> None:
    """A rendered answer exists where a value can be served, and holds as long as it does."""
    store.publish(make_decision(signals={Signal.QUEUE_DEPTH: 1.5}))
    queue = store.answer("mistral-7b", QUEUE)
    assert queue is not None
    assert queue.fresh_until == store.value(QUEUE, "mistral-7b", START).fresh_until
    assert store.answer("mistral-7b", EXTERNAL_BY_SIGNAL[Signal.REQUEST_RATE]) is None
    assert store.answer("tinyllama", EXTERNAL_DESIRED_REPLICAS) is None


def test_a_fallback_answer_holds_until_the_next_decision(store: DecisionStore) -> None:
    """The fallback's desired replicas are served however old the data; the answer says so."""
    store.publish(make_decision(demand=None, reasons=(Reason.FALLBACK,)))
    rendered = store.answer("mistral-7b", EXTERNAL_DESIRED_REPLICAS)
    assert rendered is not None
    assert rendered.fresh_until == math.inf


def test_a_draft_written_in_steps_is_one_publish(store: DecisionStore) -> None:
    """Decisions added to a draft in several steps appear together, at one version step."""
    before = store.version
    draft = store.draft()
    draft.add([make_decision("tinyllama", desired=3)])
    draft.add([make_decision("mistral-7b", desired=4)])
    assert store.latest("tinyllama") is None
    store.commit(draft.snapshot())
    assert store.version == before + 1
    assert [d.model for d in store.recent()] == ["mistral-7b", "tinyllama"]
    assert store.answer("tinyllama", EXTERNAL_DESIRED_REPLICAS) is not None


def test_a_finished_draft_takes_no_more_decisions(store: DecisionStore) -> None:
    """After snapshot() the draft is closed: a late add would change a taken snapshot."""
    draft = store.draft()
    draft.snapshot()
    with pytest.raises(RuntimeError, match="draft"):
        draft.add([make_decision()])


def test_a_replaced_snapshot_is_released_without_touching_the_current_one(
    store: DecisionStore,
) -> None:
    """commit returns what it replaced; releasing it (a model at a time) empties it only."""
    store.publish_all(make_decision(m, desired=2) for m in MODELS)
    replaced = store.commit(store.prepare(make_decision(m, desired=3) for m in MODELS))
    assert replaced.version == store.version - 1
    assert {d.desired_replicas for d in replaced.latest.values()} == {2}
    steps = sum(1 for _ in replaced.release())
    assert steps >= len(MODELS)
    assert (replaced.latest, replaced.last_good, replaced.answers) == ({}, {}, {})
    assert {store.value(EXTERNAL_DESIRED_REPLICAS, m, START).value for m in MODELS} == {3}
    assert [d.desired_replicas for d in store.recent()] == [3] * 4 + [2] * 4
