"""Every manifest validates against the Kubernetes schemas of 1.30 through 1.37 (strict).

kubernetes-validate ships the OpenAPI schemas of each release; strict mode rejects unknown
fields (a typo such as `averagUtilization`). CRDs have no schema there: HelmRelease,
OCIRepository, ServiceMonitor and PrometheusRule are checked instead by the small JSON
schemas below, which hold the fields scaler relies on (also strict: no unknown keys at the
levels they describe).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.objects import (
    Obj,
    SourcedObject,
    kubectl,
    kustomize_build,
    plain_objects,
)

VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]

CRD_KINDS = frozenset({"HelmRelease", "OCIRepository", "ServiceMonitor", "PrometheusRule"})


def _validate_all(objects: list[tuple[str, Obj]], version: str) -> list[str]:
    errors = []
    for ref, obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{ref}: {exc}")
    return errors


def _plain() -> list[tuple[str, Obj]]:
    return [(o.ref, o.obj) for o in plain_objects()]


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_manifests_validate_strictly(version: str) -> None:
    """Every object in every manifest file is valid for this Kubernetes version (strict)."""
    assert _validate_all(_plain(), version) == []


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: no kustomize build")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("directory", [".", "model-files", "jobs", "jobs/merge"])
def test_kustomize_output_validates_strictly(directory: str, version: str) -> None:
    """What `kubectl kustomize manifests/`, `manifests/model-files` and the tuning Jobs
    (`manifests/jobs`, `manifests/jobs/merge`) build (generated ConfigMaps included) is valid.
    (manifests/flux builds the same objects but the workloads and the fetch Jobs, plus CRDs
    only.)"""
    objects = [
        (f"build {directory}: {o['kind']}/{o['metadata']['name']}", o)
        for o in kustomize_build(directory)
    ]
    assert _validate_all(objects, version) == []


def test_kinds_without_a_kubernetes_schema_are_only_the_known_crds() -> None:
    """kubernetes-validate knows every kind except the CRDs checked by our own schemas."""
    unknown = set()
    for sourced in plain_objects():
        try:
            kubernetes_validate.validate(sourced.obj, VERSIONS[-1], True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(sourced.obj["kind"])
        except kubernetes_validate.ValidationError:
            pass  # reported by the strict validation tests
    assert unknown == CRD_KINDS


def test_strict_validation_rejects_a_misspelled_field() -> None:
    """The validator used above really is strict (guards against a silently lax setup)."""
    hpa = next(o.obj for o in plain_objects() if o.obj["kind"] == "HorizontalPodAutoscaler")
    broken = {**hpa, "spec": {**hpa["spec"], "maxReplica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], True)


# --- Our own schemas for the CRDs ----------------------------------------------------------

_STR = {"type": "string", "minLength": 1}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _crd(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}

_RELABEL = {
    "type": "object",
    "properties": {
        "sourceLabels": {"type": "array", "items": _STR},
        "targetLabel": _STR,
        "regex": _STR,
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
        "replacement": {"type": "string"},
    },
    "additionalProperties": False,
}

_ALERTING_RULE: dict[str, Any] = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
        "expr": _STR,
        "for": _DURATION,
        "labels": {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
        },
        "annotations": {
            "type": "object",
            "required": ["summary", "description"],
        },
    },
    "additionalProperties": False,
}
"""An alerting rule as ours are written: CamelCase name, severity, summary and description."""

_RECORDING_RULE: dict[str, Any] = {
    "type": "object",
    "required": ["record", "expr"],
    "properties": {
        # Prometheus' naming convention level:metric:operations.
        "record": {"type": "string", "pattern": "^[a-z_]+:[a-z_]+:[a-z0-9_]+$"},
        "expr": _STR,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
"""A recording rule (monitoring.coreos.com/v1 Rule with `record`)."""


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # helm.toolkit.fluxcd.io/v2 HelmRelease, chartRef form (Flux >= 2.3).
    "HelmRelease": _crd(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        {
            "type": "object",
            "required": ["interval", "chartRef", "values"],
            "properties": {
                "interval": _DURATION,
                "timeout": _DURATION,
                "dependsOn": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": _STR, "namespace": _STR},
                        "additionalProperties": False,
                    },
                },
                "chartRef": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "properties": {
                        "kind": {"enum": ["OCIRepository", "HelmChart"]},
                        "name": _STR,
                        "namespace": _STR,
                    },
                    "additionalProperties": False,
                },
                "install": {"type": "object"},
                "upgrade": {"type": "object"},
                "values": {
                    "type": "object",
                    "required": ["controllers"],  # a Job release has no Service
                    "properties": {
                        "global": {"type": "object"},
                        "controllers": {"type": "object", "minProperties": 1},
                        "service": {"type": "object", "minProperties": 1},
                        "persistence": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    ),
    "OCIRepository": _crd(
        "source.toolkit.fluxcd.io/v1",
        "OCIRepository",
        {
            "type": "object",
            "required": ["interval", "url", "ref"],
            "properties": {
                "interval": _DURATION,
                "url": {"type": "string", "pattern": "^oci://"},
                "ref": {
                    "type": "object",
                    "properties": {"tag": _STR, "semver": _STR, "digest": _STR},
                    "minProperties": 1,
                    "additionalProperties": False,
                },
                "layerSelector": {
                    "type": "object",
                    "properties": {
                        "mediaType": _STR,
                        "operation": {"enum": ["extract", "copy"]},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    ),
    "ServiceMonitor": _crd(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": _STR,
                "selector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "bearerTokenFile": _STR,
                            "tlsConfig": {"type": "object"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    "PrometheusRule": _crd(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": _STR,
                            "rules": {
                                "type": "array",
                                "items": {"oneOf": [_ALERTING_RULE, _RECORDING_RULE]},
                            },
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
}


def _crd_objects() -> list[SourcedObject]:
    return [o for o in plain_objects() if o.obj["kind"] in CRD_KINDS]


@pytest.mark.parametrize("sourced", _crd_objects(), ids=lambda o: o.ref)
def test_crd_objects_match_our_schema(sourced: SourcedObject) -> None:
    """HelmRelease, OCIRepository, ServiceMonitor and PrometheusRule match our JSON schemas."""
    jsonschema.validate(sourced.obj, CRD_SCHEMAS[sourced.obj["kind"]])


def test_crd_schema_rejects_an_unknown_field() -> None:
    """Our CRD schemas are strict where they describe fields (a typo fails)."""
    monitor = next(o.obj for o in plain_objects() if o.obj["kind"] == "ServiceMonitor")
    broken = {**monitor, "spec": {**monitor["spec"], "endpoint": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CRD_SCHEMAS["ServiceMonitor"])
