"""The model files: one pin per policy, one fetch Job per pin, models started after their Job.

The pins (manifests/model-files/pins/*.yaml) are the only place the Hugging Face figures are
written; everything else is checked against them here: the file each model Deployment loads,
the Job that fetches it (plain and as a Flux HelmRelease, compared field by field), the
ordering (each model's HelmRelease dependsOn its fetch), and the table of figures in
docs/model-files.md.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from scaler.modelfiles import ModelFilePin, load_pin
from tests.builders import ROOT
from tests.deploy.objects import (
    MANIFESTS,
    Obj,
    containers,
    kubectl,
    kustomize_build,
    named,
    of_kind,
)
from tests.deploy.objects import policies as shipped_policies

PINS = MANIFESTS / "model-files" / "pins"
MODELS = sorted(shipped_policies())
# A homelab link the downloads must fit in their release's timeout: 20 Mbit/s.
SLOW_LINK_BYTES_PER_S = 2.5e6


def _pin(model: str) -> ModelFilePin:
    return load_pin(PINS / f"{model}.yaml")


def _job(model: str) -> Obj:
    return named("Job", f"model-file-{model}", "cortex")


def _release(name: str) -> Obj:
    (release,) = [r.obj for r in of_kind("HelmRelease") if r.obj["metadata"]["name"] == name]
    return release


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", text))


def test_every_policy_has_one_pin_and_every_pin_a_policy() -> None:
    """pins/<model>.yaml for each of policies/*.yaml, naming that model; nothing else."""
    pins = sorted(p.stem for p in PINS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert pins == MODELS
    for model in MODELS:
        assert _pin(model).model == model


@pytest.mark.parametrize("model", MODELS)
def test_the_model_loads_the_pinned_file(model: str) -> None:
    """The Deployment's and the HelmRelease's --model is /models/<the pinned file>."""
    pin, policy = _pin(model), shipped_policies()[model]
    (server,) = containers(named("Deployment", policy.target.deployment, policy.target.namespace))
    args = server["args"]
    assert args[args.index("--model") + 1] == f"/models/{pin.file}"
    (container,) = _release(model)["spec"]["values"]["controllers"][model]["containers"].values()
    assert container["args"][container["args"].index("--model") + 1] == f"/models/{pin.file}"


@pytest.mark.parametrize("model", MODELS)
def test_model_pods_mount_the_volume_read_only_and_only_the_job_writes(model: str) -> None:
    """Model pods: the gguf-models claim read-only at /models; the fetch Job: writable."""
    policy = _pin(model), shipped_policies()[model]
    deployment = named("Deployment", policy[1].target.deployment, policy[1].target.namespace)
    (server,) = containers(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "gguf-models"
    job_pod = _job(model)["spec"]["template"]["spec"]
    (fetch,) = job_pod["containers"]
    (job_mount,) = [m for m in fetch["volumeMounts"] if m["mountPath"] == "/models"]
    assert not job_mount.get("readOnly", False)
    job_volumes = {v["name"]: v for v in job_pod["volumes"]}
    assert job_volumes[job_mount["name"]]["persistentVolumeClaim"] == {"claimName": "gguf-models"}
    claim = named("PersistentVolumeClaim", "gguf-models", "cortex")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("model", MODELS)
def test_the_job_fetches_the_models_pin(model: str) -> None:
    """`scaler fetch-model --pin /pins/<model>.yaml --models-dir /models`, the pins ConfigMap
    at /pins, and the pin's sha256 on the pod template (a pin change changes the Job)."""
    job = _job(model)
    pod = job["spec"]["template"]
    (fetch,) = pod["spec"]["containers"]
    assert fetch["command"] == ["scaler", "fetch-model"]
    assert fetch["args"] == ["--pin", f"/pins/{model}.yaml", "--models-dir", "/models"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (pins_mount,) = [m for m in fetch["volumeMounts"] if m["mountPath"] == "/pins"]
    assert volumes[pins_mount["name"]]["configMap"]["name"] == "model-files"
    assert pod["metadata"]["annotations"]["scaler.dev/model-file-sha256"] == _pin(model).sha256
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("model", MODELS)
def test_the_hf_token_is_optional(model: str) -> None:
    """HF_TOKEN comes from Secret hf-token (key token), optional: no Secret, no token."""
    (fetch,) = _job(model)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "token",
        "optional": True,
    }


@pytest.mark.parametrize("model", MODELS)
def test_the_job_meets_the_restricted_pod_security_level(model: str) -> None:
    """Non-root uid, RuntimeDefault seccomp, no privilege escalation, all capabilities
    dropped, read-only root filesystem (cortex enforces `restricted`)."""
    spec = _job(model)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (fetch,) = spec["containers"]
    assert fetch["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: no kustomize build")
def test_the_pins_configmap_holds_exactly_the_pin_files() -> None:
    """model-files/ and flux/ both generate cortex/model-files with every pin, unchanged."""
    expected = {
        p.name: p.read_text() for p in PINS.glob("*.yaml") if p.name != "kustomization.yaml"
    }
    for directory in ("model-files", "flux"):
        (configmap,) = [
            o
            for o in kustomize_build(directory)
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "model-files"
        ]
        assert configmap["metadata"]["namespace"] == "cortex"
        assert configmap["data"] == expected


# --- Flux ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_the_models_release_waits_for_its_model_file(model: str) -> None:
    """The model's HelmRelease dependsOn model-file-<model>, which is a Job release: helm
    waits for the Job (disableWaitForJobs unset), with a timeout the download fits in."""
    assert _release(model)["spec"]["dependsOn"] == [{"name": f"model-file-{model}"}]
    fetch = _release(f"model-file-{model}")
    assert "disableWaitForJobs" not in fetch["spec"].get("install", {})
    assert "disableWaitForJobs" not in fetch["spec"].get("upgrade", {})
    assert fetch["spec"]["upgrade"]["force"] is True  # a changed Job is replaced, not patched
    budget = _pin(model).size_bytes / SLOW_LINK_BYTES_PER_S
    assert _duration_s(fetch["spec"]["timeout"]) >= budget


def _job_essentials(job: Obj) -> dict[str, Any]:
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = (
            ("claim", volume["persistentVolumeClaim"]["claimName"])
            if "persistentVolumeClaim" in volume
            else ("configMap", volume["configMap"]["name"])
            if "configMap" in volume
            else ("emptyDir", "")
        )
        mounts[mount["mountPath"]] = (source, bool(mount.get("readOnly")))
    return {
        "container": container["name"],
        "image": container["image"],
        "command": container["command"],
        "args": container["args"],
        "env": {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]},
        "resources": container["resources"],
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["spec"]["securityContext"],
        "restartPolicy": pod["spec"]["restartPolicy"],
        "annotations": pod["metadata"]["annotations"],
        "backoffLimit": job["spec"]["backoffLimit"],
        "mounts": mounts,
    }


def _release_essentials(name: str, values: Obj) -> dict[str, Any]:
    controller = values["controllers"][name]
    ((container_name, container),) = controller["containers"].items()
    pod = controller["pod"]
    kinds = {"persistentVolumeClaim": "claim", "configMap": "configMap", "emptyDir": "emptyDir"}
    mounts = {}
    for volume in values["persistence"].values():
        ref = volume.get("existingClaim") or volume.get("name") or ""
        for mount in volume["globalMounts"]:
            mounts[mount["path"]] = ((kinds[volume["type"]], ref), bool(mount.get("readOnly")))
    image = container["image"]
    return {
        "container": container_name,
        "image": f"{image['repository']}:{image['tag']}",
        "command": container["command"],
        "args": container["args"],
        "env": {
            k: (v["valueFrom"] if isinstance(v, dict) else v) for k, v in container["env"].items()
        },
        "resources": container["resources"],
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["securityContext"],
        "restartPolicy": pod["restartPolicy"],
        "annotations": pod["annotations"],
        "backoffLimit": controller["job"]["backoffLimit"],
        "mounts": mounts,
    }


@pytest.mark.parametrize("model", MODELS)
def test_the_fetch_release_runs_the_plain_job(model: str) -> None:
    """app-template values (controller type job) = the plain Job: image, command, args, env,
    resources, security contexts, mounts, the sha256 annotation, retries."""
    name = f"model-file-{model}"
    values = _release(name)["spec"]["values"]
    assert values["controllers"][name]["type"] == "job"
    assert values["global"]["nameOverride"] == name
    assert _release_essentials(name, values) == _job_essentials(_job(model))


# --- docs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_docs_quote_the_pinned_figures(model: str) -> None:
    """docs/model-files.md's table has the pin's repo, revision, file, size and sha256 on the
    model's row (the docs cannot drift from what the Jobs fetch)."""
    pin = _pin(model)
    page = (ROOT / "docs" / "model-files.md").read_text()
    (row,) = [line for line in page.splitlines() if line.startswith(f"| `{model}` |")]
    for figure in (pin.repo, pin.revision, pin.file, f"{pin.size_bytes:,}", pin.sha256):
        assert figure in row, f"{model}: {figure} missing from docs/model-files.md"
