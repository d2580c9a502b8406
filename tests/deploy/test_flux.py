"""The Flux HelmReleases (bjw-s app-template values) say what the plain workloads say.

helm is not installable here, so the chart is not rendered; instead the fields that decide
how a workload runs are read from both sides and compared: image, command, args, env,
container ports (app-template derives them from the Service ports), probes, resources,
security contexts, volume mounts, replicas (null where the HPA owns it), pod scheduling,
and the Service ports. Names come out right because app-template names the single
controller and Service after the release (`global.nameOverride` sets the name label).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.objects import Obj, SourcedObject, containers, named, of_kind


def _releases() -> list[SourcedObject]:
    """The releases of long-running workloads (the model-file Jobs' releases are compared
    with their plain Jobs in test_model_files.py)."""
    return [
        r
        for r in of_kind("HelmRelease")
        if all(c.get("type", "deployment") == "deployment" for c in _controllers(r))
    ]


def _controllers(release: SourcedObject) -> list[Obj]:
    return list(release.obj["spec"]["values"]["controllers"].values())


def _essentials_of_deployment(deployment: Obj, service: Obj) -> dict[str, Any]:
    (container,) = containers(deployment)
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: bool(m.get("readOnly")) for m in container["volumeMounts"]}
    return {
        "replicas": deployment["spec"].get("replicas"),
        "container": container["name"],
        "image": container["image"],
        "command": container.get("command"),
        "args": container["args"],
        "env": {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])},
        "ports": {p["name"]: p["containerPort"] for p in container["ports"]},
        "probes": {
            kind: container.get(f"{kind}Probe") for kind in ("startup", "readiness", "liveness")
        },
        "resources": container["resources"],
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["securityContext"],
        "serviceAccount": pod.get("serviceAccountName"),
        "affinity": pod.get("affinity"),
        "spread": pod.get("topologySpreadConstraints"),
        "mounts": mounts,
        "service": {p["name"]: p["port"] for p in service["spec"]["ports"]},
        "serviceType": service["spec"]["type"],
    }


def _essentials_of_values(name: str, values: Obj) -> dict[str, Any]:
    controller = values["controllers"][name]
    ((container_name, container),) = controller["containers"].items()
    pod = controller["pod"]
    (service,) = values["service"].values()
    image = container["image"]
    mounts = {}
    for volume in values.get("persistence", {}).values():
        for mount in volume["globalMounts"]:
            mounts[mount["path"]] = bool(mount.get("readOnly"))
    probes = {}
    for kind in ("startup", "readiness", "liveness"):
        probe = container["probes"][kind]
        probes[kind] = probe["spec"] if probe["enabled"] else None
        if probe["enabled"]:
            assert probe["custom"] is True, f"{name}: {kind} probe must be custom"
    return {
        "replicas": controller["replicas"],
        "container": container_name,
        "image": f"{image['repository']}:{image['tag']}",
        "command": container.get("command"),
        "args": container["args"],
        "env": {
            k: (v["valueFrom"] if isinstance(v, dict) else v)
            for k, v in container.get("env", {}).items()
        },
        # app-template gives the container one port per Service port: targetPort or port.
        "ports": {k: p.get("targetPort", p["port"]) for k, p in service["ports"].items()},
        "probes": probes,
        "resources": container["resources"],
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["securityContext"],
        "serviceAccount": controller.get("serviceAccount", {}).get("name"),
        "affinity": pod.get("affinity"),
        "spread": pod.get("topologySpreadConstraints"),
        "mounts": mounts,
        "service": {k: p["port"] for k, p in service["ports"].items()},
        "serviceType": service["type"],
    }


@pytest.mark.parametrize("release", _releases(), ids=lambda r: r.obj["metadata"]["name"])
def test_release_values_match_the_plain_workload(release: SourcedObject) -> None:
    """Image, args, env, ports, probes, resources, replicas... equal the plain manifests."""
    meta = release.obj["metadata"]
    deployment = named("Deployment", meta["name"], meta["namespace"])
    service = named("Service", meta["name"], meta["namespace"])
    values = release.obj["spec"]["values"]
    assert _essentials_of_values(meta["name"], values) == _essentials_of_deployment(
        deployment, service
    )


@pytest.mark.parametrize("release", _releases(), ids=lambda r: r.obj["metadata"]["name"])
def test_release_names_its_objects_like_the_plain_manifests(release: SourcedObject) -> None:
    """One controller and one Service, keyed by the release name, nameOverride = release
    name: the Deployment the HPA targets and the Service the activator forwards to keep
    their names, and pods keep the app.kubernetes.io/name label selectors rely on."""
    name = release.obj["metadata"]["name"]
    values = release.obj["spec"]["values"]
    assert list(values["controllers"]) == [name]
    assert list(values["service"]) == [name]
    assert values["service"][name]["controller"] == name
    assert values["global"]["nameOverride"] == name
    deployment = named("Deployment", name, release.obj["metadata"]["namespace"])
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    plain_labels = dict(deployment["spec"]["template"]["metadata"]["labels"])
    plain_labels.pop("app.kubernetes.io/name")
    assert values["controllers"][name]["pod"]["labels"] == plain_labels


def test_every_plain_workload_has_a_release() -> None:
    """No Deployment is missing from the Flux layout."""
    released = {(r.obj["metadata"]["namespace"], r.obj["metadata"]["name"]) for r in _releases()}
    plain = {
        (d.obj["metadata"]["namespace"], d.obj["metadata"]["name"])
        for d in of_kind("Deployment")
        if "flux" not in d.path.parts
    }
    assert released == plain


def test_releases_use_the_pinned_app_template_chart() -> None:
    """Every release renders the OCIRepository app-template, pinned to one tag."""
    (repository,) = of_kind("OCIRepository")
    assert repository.obj["spec"]["url"] == "oci://ghcr.io/bjw-s-labs/helm/app-template"
    assert repository.obj["spec"]["ref"]["tag"]
    for release in of_kind("HelmRelease"):
        assert release.obj["spec"]["chartRef"] == {
            "kind": "OCIRepository",
            "name": repository.obj["metadata"]["name"],
            "namespace": repository.obj["metadata"]["namespace"],
        }
