"""The adapter and activator workloads: hardened, highly available, and run with flags the
`scaler` command really has.

The flags are checked against the command itself (typer's click command tree), so a renamed
option fails here rather than in a CrashLoopBackOff.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from kubernetes import utils

from scaler.cli import app
from tests.deploy.objects import Obj, containers, named

ADAPTER = ("Deployment", "scaler", "scaler-system")
ACTIVATOR = ("Deployment", "scaler-activator", "cortex")
kube_utils: Any = utils  # the client's helpers are untyped


def _subcommand(name: str) -> Any:
    """The click command of `scaler <name>`, or None (typer vendors click: no isinstance)."""
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    return commands.get(name)


def _flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("--")]


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in param.opts}


def _adapter() -> Obj:
    return named(*ADAPTER)


def _activator() -> Obj:
    return named(*ACTIVATOR)


def test_adapter_flags_exist_in_scaler_serve() -> None:
    """Every --flag in the adapter's args is an option of `scaler serve` (the ENTRYPOINT)."""
    serve = _subcommand("serve")
    assert serve is not None
    (container,) = containers(_adapter())
    assert "command" not in container, "the image's ENTRYPOINT is `scaler serve`"
    assert set(_flags(container["args"])) <= _options(serve)


def test_activator_flags_exist_in_scaler_activator() -> None:
    """The activator runs `scaler activator` with options that command has."""
    activator = _subcommand("activator")
    assert activator is not None
    (container,) = containers(_activator())
    assert container["command"] == ["scaler", "activator"]
    assert set(_flags(container["args"])) <= _options(activator)


def test_adapter_runs_two_replicas_on_different_nodes_with_a_disruption_budget() -> None:
    """2 replicas, required anti-affinity on hostname, a PDB keeping one through drains."""
    spec = _adapter()["spec"]
    labels = spec["selector"]["matchLabels"]
    assert spec["replicas"] == 2
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == {"matchLabels": labels}
    budget = named("PodDisruptionBudget", "scaler", "scaler-system")["spec"]
    assert budget == {"minAvailable": 1, "selector": {"matchLabels": labels}}


def test_adapter_probes_livez_and_readyz_over_https_on_the_served_port() -> None:
    """Liveness /livez and readiness /readyz over HTTPS on the port the Service targets."""
    (container,) = containers(_adapter())
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("https", 6443)
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    assert "0.0.0.0:6443" in container["args"]


@pytest.mark.parametrize("ref", [ADAPTER, ACTIVATOR], ids=["adapter", "activator"])
def test_workload_is_hardened(ref: tuple[str, str, str]) -> None:
    """Non-root, seccomp RuntimeDefault, no privilege escalation, read-only root, no caps,
    requests and a memory limit."""
    deployment = named(*ref)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(deployment):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def test_adapter_knows_its_namespace_and_name_from_the_downward_api() -> None:
    """POD_NAMESPACE and POD_NAME come from the pod's metadata (Lease and identity)."""
    (container,) = containers(_adapter())
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def test_service_and_apiservice_reach_the_adapter() -> None:
    """APIService -> Service scaler-system/scaler:443 -> the adapter's https port (6443)."""
    api = named("APIService", "v1beta1.external.metrics.k8s.io")["spec"]
    assert (api["group"], api["version"]) == ("external.metrics.k8s.io", "v1beta1")
    service = named("Service", api["service"]["name"], api["service"]["namespace"])
    (port,) = service["spec"]["ports"]
    assert port["port"] == api["service"]["port"] == 443
    assert port["targetPort"] == "https"
    assert service["spec"]["selector"] == _adapter()["spec"]["selector"]["matchLabels"]


def test_policies_configmap_is_mounted_where_the_flag_points() -> None:
    """--policies names the directory the scaler-policies ConfigMap is mounted on."""
    for ref in (ADAPTER, ACTIVATOR):
        deployment = named(*ref)
        (container,) = containers(deployment)
        args = container["args"]
        path = args[args.index("--policies") + 1]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mount["name"]]["configMap"]["name"] == "scaler-policies"


def test_network_policy_admits_the_served_port_only() -> None:
    """The adapter's NetworkPolicy selects its pods and admits TCP 6443, nothing else."""
    policy = named("NetworkPolicy", "scaler", "scaler-system")  # the tune Jobs have their own
    assert policy["spec"]["podSelector"] == _adapter()["spec"]["selector"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6443, "protocol": "TCP"}]


def test_activator_memory_limit_holds_a_full_queue_of_the_largest_bodies() -> None:
    """--queue-size × --max-body-bytes (one model's queue full of bodies at the limit) is at
    most half the container's memory limit: a burst of held requests cannot get the
    activator OOM-killed, which would drop every request it holds."""
    (container,) = containers(_activator())
    args = container["args"]
    queue_size = int(args[args.index("--queue-size") + 1])
    max_body = int(args[args.index("--max-body-bytes") + 1])
    limit = kube_utils.parse_quantity(container["resources"]["limits"]["memory"])
    assert queue_size * max_body <= limit / 2
