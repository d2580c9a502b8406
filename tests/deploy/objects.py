"""The manifests under manifests/ as Kubernetes objects, for the deployment tests.

Plain files are read once per session; `kustomize_build` runs the real ``kubectl kustomize``
(kubectl 1.32 is on the machine; without it the tests that need a build skip, saying so).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaler.core import ModelPolicy
from scaler.policy.loader import load_policies
from tests.builders import POLICIES, ROOT

MANIFESTS = ROOT / "manifests"

Obj = dict[str, Any]
"""A Kubernetes object as parsed from YAML (tests only: the manifests are untyped data)."""

NOT_OBJECTS = frozenset(
    {
        "kustomization.yaml",
        "prometheus-rule.test.yaml",
        "prometheus-rule-slo-cost.test.yaml",
        "scrape-configs.yaml",
        "gatus-endpoints.yaml",
        "homepage-services.yaml",
    }
)
"""YAML files under manifests/ that are not Kubernetes objects (Prometheus, Gatus and Homepage
configuration, promtool tests, kustomize's own)."""


@dataclass(frozen=True)
class SourcedObject:
    """A manifest object and the file it came from (for messages)."""

    path: Path
    obj: Obj

    @property
    def ref(self) -> str:
        """kind/namespace/name and the file, for assertion messages."""
        meta = self.obj.get("metadata", {})
        return (
            f"{self.obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')} "
            f"({self.path.relative_to(ROOT)})"
        )


def manifest_files() -> list[Path]:
    """Every YAML file under manifests/ that holds Kubernetes objects (policy copies,
    model-file pins and the tune Job's scenario excluded: kustomize turns those into
    ConfigMaps)."""
    return sorted(
        path
        for path in MANIFESTS.rglob("*.yaml")
        if path.name not in NOT_OBJECTS
        and not {"policies", "pins", "scenario"} & set(path.relative_to(MANIFESTS).parts)
    )


@functools.cache
def plain_objects() -> tuple[SourcedObject, ...]:
    """Every object of every manifest file, in file order."""
    found = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append(SourcedObject(path, document))
    return tuple(found)


def of_kind(kind: str, objects: Sequence[SourcedObject] | None = None) -> list[SourcedObject]:
    """The objects of one kind."""
    return [o for o in (plain_objects() if objects is None else objects) if o.obj["kind"] == kind]


def named(kind: str, name: str, namespace: str | None = None) -> Obj:
    """The one plain object of `kind` called `name` (in `namespace` when given)."""
    matches = [
        o.obj
        for o in of_kind(kind)
        if o.obj["metadata"]["name"] == name
        and (namespace is None or o.obj["metadata"].get("namespace") == namespace)
        and "flux" not in o.path.parts
    ]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def kubectl() -> str | None:
    """The kubectl executable, or None."""
    return shutil.which("kubectl")


@functools.cache
def kustomize_build(directory: str) -> tuple[Obj, ...]:
    """`kubectl kustomize manifests/<directory>` parsed into objects."""
    binary = kubectl()
    assert binary is not None, "kubectl is not installed"
    result = subprocess.run(
        [binary, "kustomize", str(MANIFESTS / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


@functools.cache
def policies() -> Mapping[str, ModelPolicy]:
    """The shipped policies by model name."""
    return {p.model: p for p in load_policies(POLICIES)}


def containers(deployment: Obj) -> Iterator[Obj]:
    """The containers of a Deployment's pod template."""
    yield from deployment["spec"]["template"]["spec"]["containers"]
