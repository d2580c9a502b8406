"""The kustomize layouts build, and what they generate is what the repository holds.

`kubectl kustomize` is the real kustomize (v5.5 inside kubectl 1.32): the tests skip only
where kubectl is absent.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from scaler.dashboards import render_all
from tests.builders import POLICIES
from tests.deploy.objects import MANIFESTS, Obj, kubectl, kustomize_build

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl not installed: kustomize builds cannot run"
)

BASE_POLICIES = MANIFESTS / "base" / "policies"


def _ids(objects: tuple[Obj, ...]) -> Counter[tuple[str, str, str]]:
    return Counter(
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects
    )


@pytest.mark.parametrize(
    "directory",
    [".", "base", "workloads", "monitoring", "flux", "model-files", "jobs", "jobs/merge"],
)
def test_directory_builds_without_duplicates(directory: str) -> None:
    """Each kustomization builds, and no object appears twice."""
    objects = kustomize_build(directory)
    assert objects
    assert [key for key, count in _ids(objects).items() if count > 1] == []


def test_flux_layout_installs_the_same_objects_as_the_plain_one_except_the_workloads() -> None:
    """Flux = the plain manifests plus model-files/, with the Deployments, DaemonSets,
    Services and fetch Jobs replaced by HelmReleases (one per Deployment, DaemonSet or Job)."""
    plain = set(_ids(kustomize_build("."))) | set(_ids(kustomize_build("model-files")))
    flux = set(_ids(kustomize_build("flux")))
    jobs = {key for key in _ids(kustomize_build("model-files")) if key[0] == "Job"}
    workloads = set(_ids(kustomize_build("workloads"))) | jobs
    releases = {key for key in flux if key[0] in ("HelmRelease", "OCIRepository")}
    assert plain - workloads == flux - releases
    released = {(ns, name) for kind, ns, name in releases if kind == "HelmRelease"}
    run = {(ns, name) for kind, ns, name in workloads if kind in ("Deployment", "DaemonSet", "Job")}
    assert run == released


def test_policies_copy_is_in_sync_with_the_repository_policies() -> None:
    """manifests/base/policies is byte-identical to policies/ (kustomize cannot read ../)."""
    shipped = {p.name: p.read_bytes() for p in POLICIES.glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in BASE_POLICIES.glob("*.yaml")}
    assert copied == shipped, "run: cp policies/*.yaml manifests/base/policies/"


def test_policies_configmaps_carry_every_policy_for_adapter_and_activator() -> None:
    """The generated scaler-policies ConfigMaps (scaler-system and cortex) hold every policy."""
    maps = {
        o["metadata"]["namespace"]: o
        for o in kustomize_build(".")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "scaler-policies"
    }
    assert set(maps) == {"scaler-system", "cortex"}
    expected = {p.name: p.read_text() for p in POLICIES.glob("*.yaml")}
    for configmap in maps.values():
        assert configmap["data"] == expected


def test_dashboard_configmaps_hold_the_rendered_dashboards_for_the_grafana_sidecar() -> None:
    """One ConfigMap per dashboard, labelled grafana_dashboard="1", data = rendered JSON."""
    maps = [
        o
        for o in kustomize_build("monitoring")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("scaler-dashboard-")
    ]
    data: dict[str, str] = {}
    for configmap in maps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        data.update(configmap["data"])
    assert data == render_all()
    for text in data.values():
        assert json.loads(text)["uid"]


def test_dashboard_configmaps_fit_client_side_apply() -> None:
    """Each dashboard ConfigMap stays under the 256 KiB last-applied annotation limit."""
    for o in kustomize_build("monitoring"):
        if o["kind"] == "ConfigMap":
            assert len(yaml.safe_dump(o).encode()) < 256 * 1024, o["metadata"]["name"]
