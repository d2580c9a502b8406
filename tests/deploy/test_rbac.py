"""The RBAC manifests grant exactly the Kubernetes API calls the code makes.

The calls come from the code, never from a second hand-written list: `scaler.live.kube`
declares ``KUBERNETES_CALLS`` (helper tests record them through a Kubernetes stand-in), and
`tests.deploy.kubernetes_calls` reads the calls out of the source with `ast`; the two must
agree, and the Roles/ClusterRoles bound to each ServiceAccount must grant that set, no more.
Calls covered by a built-in role scaler binds to (the front-proxy ConfigMap reader) are
excluded from our own roles, and a built-in role is bound only if the code makes a call it
grants.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaler.live.kube import KUBERNETES_CALLS
from tests.builders import ROOT
from tests.deploy.kubernetes_calls import ApiCall, calls_in_package
from tests.deploy.objects import Obj, of_kind, plain_objects, policies

ADAPTER = ("scaler-system", "scaler")
ACTIVATOR = ("cortex", "scaler-activator")

BUILTIN_GRANTS: dict[str, set[ApiCall]] = {
    # kube-system Role: get/list/watch ConfigMap extension-apiserver-authentication.
    "extension-apiserver-authentication-reader": {
        ApiCall(verb, "", "configmaps") for verb in ("get", "list", "watch")
    },
}
"""What the built-in roles we bind to grant (the part that matters here)."""

CLUSTER_SCOPED = frozenset({"nodes"})


def _expand(rules: Iterable[Obj]) -> set[ApiCall]:
    granted = set()
    for rule in rules:
        assert "resourceNames" not in rule, rule
        assert "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    granted.add(ApiCall(verb, group, name, sub))
    return granted


def _bindings_of(account: tuple[str, str]) -> list[tuple[Obj, str | None]]:
    """(roleRef, namespace of the binding or None for a ClusterRoleBinding) for `account`."""
    found = []
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for sourced in of_kind(kind):
            binding = sourced.obj
            for subject in binding["subjects"]:
                if (
                    subject["kind"] == "ServiceAccount"
                    and (subject["namespace"], subject["name"]) == account
                ):
                    found.append((binding["roleRef"], binding["metadata"].get("namespace")))
    return found


def _own_role(kind: str, name: str, namespace: str | None) -> Obj | None:
    for sourced in of_kind(kind):
        meta = sourced.obj["metadata"]
        if meta["name"] == name and meta.get("namespace") == namespace:
            return sourced.obj
    return None


def _grants(account: tuple[str, str]) -> tuple[dict[str | None, set[ApiCall]], set[str]]:
    """Our own grants to `account` by namespace (None = cluster-wide), and built-ins bound."""
    own: dict[str | None, set[ApiCall]] = {}
    builtins = set()
    for ref, namespace in _bindings_of(account):
        role_namespace = namespace if ref["kind"] == "Role" else None
        role = _own_role(ref["kind"], ref["name"], role_namespace)
        if role is None:
            assert ref["name"] in BUILTIN_GRANTS, f"binding to unknown role {ref['name']}"
            builtins.add(ref["name"])
            continue
        own.setdefault(namespace, set()).update(_expand(role["rules"]))
    return own, builtins


def _adapter_calls() -> set[ApiCall]:
    found = set()
    for package in ("live", "api", "sources"):
        found |= calls_in_package(ROOT / "scaler" / package)
    return found


def test_adapter_code_scan_agrees_with_its_declared_calls() -> None:
    """The `ast` scan of the adapter finds exactly scaler.live.kube.KUBERNETES_CALLS."""
    declared = {ApiCall(c.verb, c.group, c.resource, c.subresource) for c in KUBERNETES_CALLS}
    assert _adapter_calls() == declared


def test_adapter_roles_grant_exactly_the_calls_the_adapter_makes() -> None:
    """Own Roles/ClusterRoles bound to scaler-system/scaler = its calls minus built-ins, and
    each built-in role bound grants a call the adapter makes (no unused grant)."""
    own, builtins = _grants(ADAPTER)
    covered = set().union(*(BUILTIN_GRANTS[name] for name in builtins))
    calls = _adapter_calls()
    assert calls, "the scan found no Kubernetes call in the adapter"
    for name in builtins:
        assert BUILTIN_GRANTS[name] & calls, f"{name} is bound but no call needs it"
    granted = set().union(*own.values())
    assert granted == calls - covered
    assert calls <= granted | covered


def test_adapter_may_read_the_front_proxy_ca() -> None:
    """The front-proxy ConfigMap reader is bound in kube-system, where that ConfigMap lives."""
    refs = {(ref["name"], namespace) for ref, namespace in _bindings_of(ADAPTER)}
    assert ("extension-apiserver-authentication-reader", "kube-system") in refs


def test_adapter_namespaced_grants_cover_exactly_the_policy_namespaces() -> None:
    """Model-side grants live in the namespaces the policies target; leases in its own;
    only cluster-scoped resources in ClusterRoles."""
    own, _ = _grants(ADAPTER)
    targets = {p.target.namespace for p in policies().values()}
    cluster = own.get(None, set())
    assert {c.resource for c in cluster} <= CLUSTER_SCOPED
    model_side = {ns for ns, calls in own.items() if any(c.group == "apps" for c in calls)}
    assert model_side == targets
    lease_holders = {ns for ns, calls in own.items() if any(c.resource == "leases" for c in calls)}
    assert lease_holders == {ADAPTER[0]}


def test_activator_role_grants_exactly_the_calls_the_activator_makes() -> None:
    """The activator's Role = the calls scanned from scaler/activator (EndpointSlice watch,
    scale subresource for --scale-on-wake)."""
    own, builtins = _grants(ACTIVATOR)
    assert builtins == set()
    assert set(own) == {p.target.namespace for p in policies().values()}
    for granted in own.values():
        assert granted == calls_in_package(ROOT / "scaler" / "activator")


def test_hpa_controller_may_read_external_metrics() -> None:
    """kube-system/horizontal-pod-autoscaler is bound to get/list on external.metrics.k8s.io."""
    own, _ = _grants(("kube-system", "horizontal-pod-autoscaler"))
    assert own == {
        None: {
            ApiCall("get", "external.metrics.k8s.io", "*"),
            ApiCall("list", "external.metrics.k8s.io", "*"),
        }
    }


def test_no_role_is_left_unbound() -> None:
    """Every Role and ClusterRole we ship is bound to some subject."""
    bound = {
        (o.obj["roleRef"]["kind"], o.obj["roleRef"]["name"])
        for o in plain_objects()
        if o.obj["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }
    roles = {(o.obj["kind"], o.obj["metadata"]["name"]) for o in of_kind("Role")}
    roles |= {(o.obj["kind"], o.obj["metadata"]["name"]) for o in of_kind("ClusterRole")}
    assert roles <= bound


def test_the_scan_maps_operation_names_to_rbac_terms() -> None:
    """read_namespaced_deployment_scale -> get deployments/scale in apps, and friends."""
    from tests.deploy.kubernetes_calls import operation_to_calls

    assert operation_to_calls("AppsV1Api", "read_namespaced_deployment_scale") == [
        ApiCall("get", "apps", "deployments", "scale")
    ]
    assert operation_to_calls("CoordinationV1Api", "replace_namespaced_lease") == [
        ApiCall("update", "coordination.k8s.io", "leases")
    ]
    assert operation_to_calls("CoreV1Api", "list_pod_for_all_namespaces") == [
        ApiCall("list", "", "pods")
    ]
    assert operation_to_calls("CoreV1Api", "read_namespaced_config_map") == [
        ApiCall("get", "", "configmaps")
    ]
