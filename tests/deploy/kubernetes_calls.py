"""The Kubernetes API calls a package makes, read from its source with `ast`.

The official client names every operation ``<action>_[namespaced_]<kind>[_<subresource>]
[_for_all_namespaces]`` on a class per API group and version (``AppsV1Api``...). The scan:

1. finds the API objects: names or attributes assigned from a call to ``<Group>V<n>Api(...)``
   (``self._apps = k8s.AppsV1Api(client)``, ``apps: Any = client.AppsV1Api(...)``);
2. finds every attribute of those objects named like an operation, called or passed on
   (``self._apps.read_namespaced_deployment`` handed to a helper counts);
3. maps it to RBAC terms: action -> verb (read: get, list: list, create: create,
   patch: patch, replace: update, delete: delete), the kind -> its plural resource
   (``config_map`` -> configmaps, ``endpoint_slice`` -> endpointslices), a trailing
   ``_scale``/``_status`` -> that subresource, the class -> the API group (table below);
4. a ``list_*`` operation handed to ``Watch().stream`` also needs the ``watch`` verb.

Anything it cannot map fails loudly (`UnmappedCallError`) rather than being skipped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

API_GROUPS = {
    "CoreV1Api": "",
    "AppsV1Api": "apps",
    "CoordinationV1Api": "coordination.k8s.io",
    "EventsV1Api": "events.k8s.io",
    "DiscoveryV1Api": "discovery.k8s.io",
    "AutoscalingV2Api": "autoscaling",
    "AuthenticationV1Api": "authentication.k8s.io",
    "AuthorizationV1Api": "authorization.k8s.io",
    "ApiregistrationV1Api": "apiregistration.k8s.io",
}
"""Client class -> API group (only the classes scaler could plausibly use)."""

VERBS = {
    "read": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
}
SUBRESOURCES = ("scale", "status")
_OPERATION = re.compile(r"^(read|list|create|patch|replace|delete)_(namespaced_)?([a-z_]+?)$")


@dataclass(frozen=True, order=True)
class ApiCall:
    """One kind of request, in RBAC terms."""

    verb: str
    group: str
    resource: str
    subresource: str = ""


class UnmappedCallError(ValueError):
    """An operation name or client class the scan does not know how to map."""


def _plural(kind: str) -> str:
    word = kind.replace("_", "")
    if word.endswith("s"):
        return word
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + "s"


def operation_to_calls(api_class: str, operation: str) -> list[ApiCall]:
    """The RBAC view of one client operation (without the watch verb)."""
    if api_class not in API_GROUPS:
        raise UnmappedCallError(f"unknown Kubernetes client class {api_class}")
    name = operation.removesuffix("_for_all_namespaces").removesuffix("_with_http_info")
    match = _OPERATION.match(name)
    if match is None:
        raise UnmappedCallError(f"{api_class}.{operation} is not an operation name")
    action, _, kind = match.groups()
    subresource = ""
    for sub in SUBRESOURCES:
        if kind.endswith("_" + sub):
            kind, subresource = kind.removesuffix("_" + sub), sub
    return [ApiCall(VERBS[action], API_GROUPS[api_class], _plural(kind), subresource)]


def _target_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _api_class(value: ast.expr | None) -> str | None:
    if isinstance(value, ast.Call):
        name = _target_name(value.func)
        if name is not None and re.fullmatch(r"[A-Z][A-Za-z]*V\d+(beta\d+)?Api", name):
            return name
    return None


def _calls_in_tree(tree: ast.AST) -> set[ApiCall]:
    objects: dict[str, str] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        api_class = _api_class(value)
        if api_class is not None:
            for target in targets:
                name = _target_name(target)
                if name is not None:
                    objects[name] = api_class
    streamed = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "stream"
        for arg in node.args[:1]
    }
    found: set[ApiCall] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = _target_name(node.value)
        if owner not in objects or not _OPERATION.match(
            node.attr.removesuffix("_for_all_namespaces")
        ):
            continue
        for call in operation_to_calls(objects[owner], node.attr):
            found.add(call)
            if id(node) in streamed and call.verb == "list":
                found.add(ApiCall("watch", call.group, call.resource, call.subresource))
    return found


def calls_in_package(directory: Path) -> set[ApiCall]:
    """Every Kubernetes API call made by the Python files under `directory`."""
    return calls_in_files(sorted(directory.rglob("*.py")))


def calls_in_files(files: Iterable[Path]) -> set[ApiCall]:
    """Every Kubernetes API call made by `files`."""
    found: set[ApiCall] = set()
    for path in files:
        found |= _calls_in_tree(ast.parse(path.read_text(), filename=str(path)))
    return found
