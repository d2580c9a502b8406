"""The model manifests agree with the policies, the adapter and the activator.

HPAs read only metrics the adapter serves, for models that have a policy, and target the
Deployment the policy names; bounds, memory and spreading follow the policy, so scaler's
placement planner and the Kubernetes scheduler see the same cluster.
"""

from __future__ import annotations

import pytest

from scaler.activator.routes import build_routes
from scaler.core import ModelClass, ModelPolicy
from scaler.metric_names import EXTERNAL_DESIRED_REPLICAS, EXTERNAL_METRICS
from scaler.simulation.scenario import check_scenario
from tests.builders import ROOT
from tests.deploy.objects import Obj, containers, named, of_kind, policies

MODELS = sorted(policies())
BENCH = ROOT / "simulations" / "bench"


def _hpas() -> list[Obj]:
    return [o.obj for o in of_kind("HorizontalPodAutoscaler")]


def _policy(model: str) -> ModelPolicy:
    return policies()[model]


def _deployment(model: str) -> Obj:
    policy = _policy(model)
    return named("Deployment", policy.target.deployment, policy.target.namespace)


def _hpa(model: str) -> Obj:
    matches = [
        h
        for h in _hpas()
        if h["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["model"]
        == model
    ]
    assert len(matches) == 1, f"{model}: expected one HPA, found {len(matches)}"
    return matches[0]


def _memory_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity)


def test_every_policy_has_one_hpa_and_every_hpa_a_policy() -> None:
    """One HPA per policy, selected by model=<policy name>; no HPA for an unknown model."""
    selected = sorted(
        h["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["model"]
        for h in _hpas()
    )
    assert selected == MODELS


def test_hpas_reference_only_metrics_the_adapter_serves() -> None:
    """Every metric of every HPA is External, one the adapter serves, selected by model."""
    for hpa in _hpas():
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "External"
            assert metric["external"]["metric"]["name"] in EXTERNAL_METRICS
            assert set(metric["external"]["metric"]["selector"]) == {"matchLabels"}
            assert metric["external"]["metric"]["selector"]["matchLabels"]["model"] in MODELS


@pytest.mark.parametrize("model", MODELS)
def test_hpa_follows_desired_replicas_exactly(model: str) -> None:
    """scaler-desired-replicas with AverageValue 1: the HPA's desired = scaler's decision."""
    (metric,) = _hpa(model)["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == EXTERNAL_DESIRED_REPLICAS
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}


@pytest.mark.parametrize("model", MODELS)
def test_hpa_targets_the_policys_deployment(model: str) -> None:
    """scaleTargetRef is the policy's target Deployment, in the policy's namespace."""
    hpa, policy = _hpa(model), _policy(model)
    assert hpa["metadata"]["namespace"] == policy.target.namespace
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": policy.target.deployment,
    }


@pytest.mark.parametrize("model", MODELS)
def test_hpa_bounds_match_the_policy(model: str) -> None:
    """maxReplicas = replicas.max; minReplicas = replicas.min, but 1 for an on-demand model
    (at 0 the HPA is ScalingDisabled and scaler owns 0 <-> 1)."""
    spec, policy = _hpa(model)["spec"], _policy(model)
    assert spec["maxReplicas"] == policy.replicas.max
    assert spec["minReplicas"] == max(policy.replicas.min, 1)


@pytest.mark.parametrize("model", MODELS)
def test_hpa_behavior_lets_the_policy_lead(model: str) -> None:
    """No HPA stabilization either way and a scale-up step as large as maxReplicas."""
    spec = _hpa(model)["spec"]
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0
    assert down["stabilizationWindowSeconds"] == 0
    assert max(p["value"] for p in up["policies"] if p["type"] == "Pods") >= spec["maxReplicas"]
    assert any(p["type"] == "Percent" and p["value"] == 100 for p in down["policies"])


@pytest.mark.parametrize("model", MODELS)
def test_replicas_are_left_to_the_hpa_and_scaler(model: str) -> None:
    """No model Deployment sets replicas: the HPA (and, for on-demand models, scaler's
    0 <-> 1) owns the count, and a set field would reset it on every apply (Mixtral awake
    at 2 would go back to 0)."""
    assert "replicas" not in _deployment(model)["spec"]


@pytest.mark.parametrize("model", MODELS)
def test_memory_request_is_the_policys_memory_per_replica(model: str) -> None:
    """requests.memory = limits.memory = placement.memoryGiB: scheduler and planner agree."""
    (server,) = containers(_deployment(model))
    resources = server["resources"]
    expected = _policy(model).placement.memory_gib * 2**30
    assert _memory_bytes(resources["requests"]["memory"]) == expected
    assert _memory_bytes(resources["limits"]["memory"]) == expected


@pytest.mark.parametrize("model", MODELS)
def test_replicas_spread_over_nodes_and_respect_max_per_node(model: str) -> None:
    """maxSkew 1 over kubernetes.io/hostname; maxPerNode 1 is a required anti-affinity."""
    pod = _deployment(model)["spec"]["template"]["spec"]
    labels = _deployment(model)["spec"]["selector"]["matchLabels"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["maxSkew"] == 1
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == labels
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    required = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if _policy(model).placement.max_per_node == 1:
        assert [(t["topologyKey"], t["labelSelector"]["matchLabels"]) for t in required] == [
            ("kubernetes.io/hostname", labels)
        ]
    else:
        assert required == []


@pytest.mark.parametrize("model", MODELS)
def test_preferred_nodes_are_the_ones_the_scenarios_simulate(model: str) -> None:
    """A model's preferred nodeAffinity (hostnames by falling weight) is what every bundled
    scenario's ``preferredNodes`` for it says, so the simulated restarts land where the
    deployed ones do; a policy that prices a restart below the uncached start relies on it."""
    pod = _deployment(model)["spec"]["template"]["spec"]
    terms = pod.get("affinity", {}).get("nodeAffinity", {})
    preferred = sorted(
        terms.get("preferredDuringSchedulingIgnoredDuringExecution", []),
        key=lambda term: -term["weight"],
    )
    hostnames = []
    for term in preferred:
        (expression,) = term["preference"]["matchExpressions"]
        assert (expression["key"], expression["operator"]) == ("kubernetes.io/hostname", "In")
        hostnames.extend(expression["values"])
    for path in [ROOT / "simulations" / "homelab.yaml", *sorted(BENCH.glob("*.yaml"))]:
        scenario, errors = check_scenario(path)
        assert scenario is not None, errors
        assert list(scenario.models[model].preferred_nodes) == hostnames, path.name
    rule = _policy(model).scale_to_zero
    if rule is not None and rule.restart_cost_seconds is not None:
        cold = _policy(model).cold_start
        if rule.restart_cost_seconds < (cold.uncached_seconds or cold.seconds):
            assert hostnames, "a restart priced as cached needs the node it is cached on"


@pytest.mark.parametrize("model", MODELS)
def test_startup_probe_waits_as_long_as_the_policy_lets_a_cold_start_take(model: str) -> None:
    """The startup probe budget covers coldStart.seconds × overdueFactor and a first start
    after the fetch (uncachedSeconds): Kubernetes must not kill a replica that scaler still
    counts as starting."""
    (server,) = containers(_deployment(model))
    probe = server["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= _policy(model).cold_start.overdue_after_seconds


@pytest.mark.parametrize("model", MODELS)
def test_model_pods_and_services_carry_the_model_label(model: str) -> None:
    """The `model` label the scrape config copies onto the series is on pods and Service."""
    deployment = _deployment(model)
    assert deployment["spec"]["template"]["metadata"]["labels"]["model"] == model
    policy = _policy(model)
    service = named("Service", policy.target.deployment, policy.target.namespace)
    assert service["metadata"]["labels"]["model"] == model
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_engine_metrics_are_switched_on() -> None:
    """llama.cpp servers run with --metrics (vLLM exports /metrics by default)."""
    for model in MODELS:
        if _policy(model).engine.value == "llamacpp":
            (server,) = containers(_deployment(model))
            assert "--metrics" in server["args"], model


def test_services_are_where_the_activator_forwards() -> None:
    """Each model's Service name and port are what the activator's routes forward to."""
    for route in build_routes(policies().values()):
        service = named("Service", route.service, route.namespace)
        ports = [p["port"] for p in service["spec"]["ports"]]
        assert route.upstream.port in ports, route.model
        assert route.upstream.host is not None
        assert route.upstream.host.startswith(f"{route.service}.{route.namespace}")


def test_on_demand_models_are_reached_through_the_activator_and_the_rest_directly() -> None:
    """Ingress: on-demand models' prefixes go to the activator (which strips them itself);
    always-on models go straight to their Service."""
    routes = {r.model: r for r in build_routes(policies().values())}
    backends: dict[str, str] = {}
    for ingress in of_kind("Ingress"):
        for rule in ingress.obj["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backends[path["path"]] = path["backend"]["service"]["name"]
    for model, policy in policies().items():
        if policy.model_class is ModelClass.ON_DEMAND:
            assert backends[routes[model].path_prefix] == "scaler-activator"
        else:
            direct = [p for p, svc in backends.items() if svc == policy.target.deployment]
            assert direct == [f"/{model}(/|$)(.*)"]
