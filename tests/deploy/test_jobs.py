"""The tuning Jobs (manifests/jobs): an Indexed Job of `scaler tune --shard` pods and the merge.

What ties them together is checked here: the shard count in the args is the Job's
`completions`, the args parse as `scaler tune` arguments (and the shard spec resolves from
the pod's JOB_COMPLETION_INDEX), the scenario in the ConfigMap loads against the shipped
policies, the merge reads the folder the shards write, the pods are hardened, RBAC-free and
offline, and the resource requests cover the per-candidate cost quoted in the manifest.
(Validation against the Kubernetes schemas and the kustomize builds: test_schemas.py and
test_kustomize.py.)
"""

from __future__ import annotations

import re

import pytest
import typer.main

from scaler.cli import app
from scaler.simulation.scenario import prepare
from scaler.simulation.shards import SHARD_INDEX_ENV, parse_shard
from scaler.simulation.tune import candidate_list
from tests.builders import POLICIES
from tests.deploy.objects import MANIFESTS, Obj, kubectl, kustomize_build, named

JOBS = MANIFESTS / "jobs"
SCENARIO = JOBS / "scenario" / "homelab-week.yaml"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _tune() -> Obj:
    return named("Job", "scaler-tune", "scaler-system")


def _merge() -> Obj:
    return named("Job", "scaler-tune-merge", "scaler-system")


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _tune_container() -> Obj:
    containers: list[Obj] = _tune()["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _parse_tune(args: list[str]) -> dict[str, object]:
    """The parameters `scaler tune` gets from `args` (click parses; nothing runs)."""
    tune = getattr(typer.main.get_command(app), "commands", {})["tune"]
    with tune.make_context("tune", list(args), resilient_parsing=False) as context:
        params: dict[str, object] = {str(k): v for k, v in context.params.items()}
    return params


def test_tune_job_is_indexed_and_its_shard_count_is_its_completions() -> None:
    """completionMode Indexed; --shard $(JOB_COMPLETION_INDEX)/N with N = completions;
    parallelism within completions; per-index retries."""
    spec = _tune()["spec"]
    assert spec["completionMode"] == "Indexed"
    args = _tune_container()["args"]
    k, _, n = _arg(args, "--shard").partition("/")
    assert k == f"$({SHARD_INDEX_ENV})"
    assert int(n) == spec["completions"]
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_tune_pod_gets_its_index_from_the_annotation_and_the_spec_resolves() -> None:
    """JOB_COMPLETION_INDEX from the pod's completion-index annotation; with it set, the
    args' shard spec (as kubelet expands it) is that shard."""
    container = _tune_container()
    (env,) = [e for e in container["env"] if e["name"] == SHARD_INDEX_ENV]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == INDEX_ANNOTATION
    spec = _arg(container["args"], "--shard")
    count = _tune()["spec"]["completions"]
    for index in (0, count - 1):
        expanded = spec.replace(f"$({SHARD_INDEX_ENV})", str(index))
        shard = parse_shard(expanded, {SHARD_INDEX_ENV: str(index)})
        assert (shard.index, shard.count) == (index, count)


def test_tune_args_are_scaler_tune_arguments_and_every_shard_has_work() -> None:
    """The args parse as `scaler tune`'s; the candidate list they ask for (built from the
    shipped policy) has at least one candidate per shard."""
    container = _tune_container()
    assert container["command"] == ["scaler", "tune"]
    params = _parse_tune(container["args"])
    assert params["workers"] == 1
    assert params["out"] is not None
    model = str(params["model"])
    prepared = prepare(SCENARIO, policies_path=POLICIES)
    candidates = candidate_list(prepared.policy(model), int(str(params["candidates"])), 0)
    assert len(candidates.points) == params["candidates"]  # not capped by the grid
    assert len(candidates.points) >= _tune()["spec"]["completions"]


def test_tune_pod_mounts_what_its_args_name() -> None:
    """/config holds the generated scenario ConfigMap's scenario.yaml; /etc/scaler/policies the
    scaler-policies ConfigMap; --out is on the scaler-tune volume."""
    pod = _tune()["spec"]["template"]["spec"]
    container = _tune_container()
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = container["args"]
    assert _arg(args, "--scenario") == "/config/scenario.yaml"
    assert volumes[mounts["/config"]]["configMap"]["name"] == "scaler-tune-scenario"
    assert _arg(args, "--policies") == "/etc/scaler/policies"
    assert volumes[mounts["/etc/scaler/policies"]]["configMap"]["name"] == "scaler-policies"
    assert _arg(args, "--out").startswith("/data/")
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "scaler-tune"
    claim = named("PersistentVolumeClaim", "scaler-tune", "scaler-system")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on every node write


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: no kustomize build")
def test_scenario_configmap_holds_the_scenario_file_and_it_loads() -> None:
    """The generated ConfigMap's scenario.yaml is the repository file, which loads (with the
    shipped policies in place of /etc/scaler/policies) and names the tuned model."""
    (configmap,) = [o for o in kustomize_build("jobs") if o["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"].startswith("scaler-tune-scenario-")
    assert configmap["data"] == {"scenario.yaml": SCENARIO.read_text()}
    prepared = prepare(SCENARIO, policies_path=POLICIES)
    assert _arg(_tune_container()["args"], "--model") in prepared.models
    (job,) = [o for o in kustomize_build("jobs") if o["kind"] == "Job"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["scenario"]["configMap"]["name"] == configmap["metadata"]["name"]


def test_merge_reads_the_folder_the_shards_write_and_prints_the_policy_it_writes() -> None:
    """Init container: `scaler tune --merge <the tune Job's --out> --output F`; the main
    container prints F (so `kubectl logs -c policy` is the chosen policy)."""
    pod = _merge()["spec"]["template"]["spec"]
    (merge,) = pod["initContainers"]
    (policy,) = pod["containers"]
    assert merge["command"] == ["scaler", "tune"]
    params = _parse_tune(merge["args"])
    assert str(params["merge"]) == _arg(_tune_container()["args"], "--out")
    assert params["allow_incomplete"] is False
    assert policy["command"] == ["cat", str(params["output"])]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"scaler-tune"}
    assert _merge()["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize("job", ["scaler-tune", "scaler-tune-merge"])
def test_tuning_pods_are_hardened_and_have_no_api_access(job: str) -> None:
    """Non-root, seccomp, no escalation, read-only root, no capabilities, requests and a memory
    limit; no service account token (no RBAC: the pods never call the API)."""
    pod = named("Job", job, "scaler-system")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: no kustomize build")
def test_jobs_bring_no_rbac_and_a_deny_all_network_policy() -> None:
    """No ServiceAccount, Role or binding in either build; the NetworkPolicy selects every
    tuning pod and allows nothing either way."""
    objects = [*kustomize_build("jobs"), *kustomize_build("jobs/merge")]
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "NetworkPolicy", "Job"}
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"]
    assert "egress" not in policy["spec"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for job in (o for o in objects if o["kind"] == "Job"):
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def _mebibytes(quantity: str) -> float:
    found = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert found, f"{quantity}: expected <n>Mi or <n>Gi"
    return float(found[1]) * (1024 if found[2] == "Gi" else 1)


def test_tune_resources_cover_the_measured_per_candidate_cost() -> None:
    """The manifest quotes the measured peak RSS of one candidate; the request covers it, the
    limit leaves room; one core per worker (the simulator is single-threaded)."""
    text = (JOBS / "job-scaler-tune.yaml").read_text()
    found = re.search(r"peaks at (\d+) MiB RSS", text)
    assert found, "the manifest cites the measured per-candidate memory"
    peak = float(found[1])
    container = _tune_container()
    resources = container["resources"]
    assert _mebibytes(resources["requests"]["memory"]) >= peak
    assert _mebibytes(resources["limits"]["memory"]) >= 2 * peak
    workers = int(_arg(container["args"], "--workers"))
    assert float(resources["requests"]["cpu"]) == workers
