"""Mixtral's page-cache pre-read: on the nodes its wake-ups prefer, of the file it serves.

The DaemonSet is worth something only where it reads the very file the Deployment maps, on
exactly the nodes the Deployment's preferred nodeAffinity sends its wake-ups to, with a
memory limit that lets the page cache it fills stay (cgroup v2 charges it to the reader);
the simulator's scenarios must say the same (``cachedNodes``) or the simulated first starts
are not the deployed ones. The Flux release must say what the plain DaemonSet says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main

from scaler.cli import app
from scaler.modelfiles.pin import load_pin
from scaler.simulation.scenario import check_scenario
from tests.builders import ROOT
from tests.deploy.objects import MANIFESTS, Obj, named, of_kind

MODEL = "mixtral-8x7b"
PREREAD = f"{MODEL}-preread"
SCENARIOS = [
    ROOT / "simulations" / "homelab.yaml",
    *sorted((ROOT / "simulations" / "bench").glob("*.yaml")),
    MANIFESTS / "jobs" / "scenario" / "homelab-week.yaml",
]

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _preread() -> Obj:
    return named("DaemonSet", PREREAD, "cortex")


def _pod(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def _preferred_hostnames() -> list[str]:
    """The Mixtral Deployment's preferred nodeAffinity hostnames, by falling weight."""
    affinity = _pod(named("Deployment", MODEL, "cortex"))["affinity"]["nodeAffinity"]
    terms = sorted(
        affinity["preferredDuringSchedulingIgnoredDuringExecution"], key=lambda t: -t["weight"]
    )
    hostnames: list[str] = []
    for term in terms:
        (expression,) = term["preference"]["matchExpressions"]
        hostnames.extend(expression["values"])
    return hostnames


def _required_hostnames(pod: Obj) -> list[str]:
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    ((expression,),) = [term["matchExpressions"] for term in required["nodeSelectorTerms"]]
    assert (expression["key"], expression["operator"]) == ("kubernetes.io/hostname", "In")
    values: list[str] = expression["values"]
    return values


def test_it_runs_on_exactly_the_nodes_the_wake_ups_prefer() -> None:
    assert _required_hostnames(_pod(_preread())) == _preferred_hostnames()


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_the_scenarios_simulate_the_page_cache_it_fills(path: Path) -> None:
    """Where a scenario models the volume read (uncachedColdStart), its Mixtral cachedNodes
    are the DaemonSet's nodes; where it does not, every start is a page-cache start already."""
    scenario, errors = check_scenario(path)
    assert scenario is not None, errors
    profile = scenario.models[MODEL]
    if profile.uncached_cold_start is None:
        assert profile.cached_nodes == ()
    else:
        assert list(profile.cached_nodes) == _required_hostnames(_pod(_preread()))


def test_it_reads_the_file_the_deployment_serves_from_the_same_volume() -> None:
    pin = load_pin(MANIFESTS / "model-files" / "pins" / f"{MODEL}.yaml")
    served_pod = _pod(named("Deployment", MODEL, "cortex"))
    (server,) = served_pod["containers"]
    served = server["args"][server["args"].index("--model") + 1]
    (reader,) = _pod(_preread())["containers"]
    assert reader["command"] == ["scaler", "preread"]
    files = [a for a in reader["args"] if not a.startswith("--")]
    assert files == [served] == [f"/models/{pin.file}"]
    claims = {
        volume["persistentVolumeClaim"]["claimName"]
        for pod in (served_pod, _pod(_preread()))
        for volume in pod["volumes"]
        if "persistentVolumeClaim" in volume
    }
    assert claims == {"gguf-models"}
    assert [m["mountPath"] for m in reader["volumeMounts"] if m.get("readOnly")] == ["/models"]


def test_its_flags_are_options_of_scaler_preread() -> None:
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    options = {opt for param in commands["preread"].params for opt in param.opts}
    (reader,) = _pod(_preread())["containers"]
    assert {a for a in reader["args"] if a.startswith("--")} <= options
    assert "--hold" in reader["args"]  # a DaemonSet container that exits is restarted


def test_its_memory_limit_holds_the_page_cache_and_its_request_reserves_nothing() -> None:
    pin = load_pin(MANIFESTS / "model-files" / "pins" / f"{MODEL}.yaml")
    (reader,) = _pod(_preread())["containers"]
    resources = reader["resources"]
    assert _bytes(resources["limits"]["memory"]) > pin.size_bytes
    assert _bytes(resources["requests"]["memory"]) <= 256 * 2**20


def test_the_flux_release_says_what_the_daemon_set_says() -> None:
    (release,) = [r.obj for r in of_kind("HelmRelease") if r.obj["metadata"]["name"] == PREREAD]
    values = release["spec"]["values"]
    assert values["global"]["nameOverride"] == PREREAD
    ((name, controller),) = values["controllers"].items()
    assert (name, controller["type"]) == (PREREAD, "daemonset")
    ((container_name, container),) = controller["containers"].items()
    (plain,) = _pod(_preread())["containers"]
    image = container["image"]
    pod = controller["pod"]
    plain_pod = _pod(_preread())
    mounts = {
        mount["path"]: bool(mount.get("readOnly"))
        for volume in values["persistence"].values()
        for mount in volume["globalMounts"]
    }
    assert {
        "name": container_name,
        "image": f"{image['repository']}:{image['tag']}",
        "command": container["command"],
        "args": container["args"],
        "resources": container["resources"],
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["securityContext"],
        "affinity": pod["affinity"],
        "mounts": mounts,
    } == {
        "name": plain["name"],
        "image": plain["image"],
        "command": plain["command"],
        "args": plain["args"],
        "resources": plain["resources"],
        "securityContext": plain["securityContext"],
        "podSecurityContext": plain_pod["securityContext"],
        "affinity": plain_pod["affinity"],
        "mounts": {m["mountPath"]: bool(m.get("readOnly")) for m in plain["volumeMounts"]},
    }
    assert release["spec"]["dependsOn"] == [{"name": f"model-file-{MODEL}"}]
