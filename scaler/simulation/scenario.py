"""Scenarios: the virtual cluster, the model profiles and the traffic of one simulation.

A scenario is one YAML document with ``kind: Scenario``, validated strictly (camelCase keys,
unknown keys are errors, each error reported with file, line and field path, like policies).
Relative paths in it (``policies``, trace files) are relative to the scenario file.

`prepare()` turns a scenario file into a `PreparedScenario`: the validated scenario, the
policies it names (or others given on the command line), and the merged, scaled trace.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from scaler.core import ModelPolicy, Node
from scaler.policy import PolicyLoadError, load_policies
from scaler.simulation import traces
from scaler.simulation.traces import TokenSizes, Trace, TraceError, TraceSource

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

SCENARIO_KIND = "Scenario"


def _listed(value: object) -> object:
    # Strict mode refuses a YAML list where a tuple is declared: accept lists as tuples.
    return tuple(value) if isinstance(value, list) else value


Listed = BeforeValidator(_listed)


class _Strict(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True
    )


class NodeSpec(_Strict):
    """A schedulable node: its name and the memory model pods may request on it."""

    name: str
    allocatable_gib: PositiveFloat = Field(alias="allocatableGiB")


class ColdStartProfile(_Strict):
    """Time from a pod being placed to being ready: log-normal around a median, capped.

    ``sigma`` 0 makes it constant. The oracle plans with ``maxSeconds`` (the worst case).
    """

    median_seconds: PositiveFloat
    sigma: NonNegativeFloat = 0.0
    max_seconds: PositiveFloat | None = None

    @property
    def worst_seconds(self) -> float:
        """The longest a cold start can take (the cap; 3x the median when unset and sigma > 0)."""
        if self.max_seconds is not None:
            return self.max_seconds
        return self.median_seconds if self.sigma == 0 else 3 * self.median_seconds

    @model_validator(mode="after")
    def _cap(self) -> ColdStartProfile:
        if self.max_seconds is not None and self.max_seconds < self.median_seconds:
            raise ValueError("maxSeconds is below medianSeconds")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One cold-start duration."""
        if self.sigma == 0:
            return self.median_seconds
        value = float(rng.lognormal(math.log(self.median_seconds), self.sigma))
        return min(value, self.worst_seconds)


class ModelProfile(_Strict):
    """How one replica of a model behaves: slots, prefill and decode speed, memory, start time.

    Service model (per request, fixed when it takes a slot): prefill takes
    ``prompt / prefillTokensPerSecond``; decode takes ``output / stream rate`` with the stream
    rate ``decodeTokensPerSecond / (1 + decodeSlowdownPerStream * (busy - 1))``, where busy is
    the number of slots of the replica in use counting this request. CPU decode is bound by
    memory bandwidth: parallel streams share it, and the replica's total rate grows only
    sub-linearly with busy slots (slowdown 1.0 = no gain from batching, 0 = perfect gain).
    """

    slots: int = Field(ge=1)
    prefill_tokens_per_second: PositiveFloat
    decode_tokens_per_second: PositiveFloat
    decode_slowdown_per_stream: NonNegativeFloat = 0.0
    memory_gib: PositiveFloat | None = Field(default=None, alias="memoryGiB")
    cold_start: ColdStartProfile
    # The first start of the model on a node since its file was fetched: the weights come from
    # the volume, not the node's page cache (26.4 GB for Mixtral). Unset: every start is
    # `cold_start`. See VirtualCluster for which starts count as first.
    uncached_cold_start: ColdStartProfile | None = None
    # Nodes the model's pods prefer, most preferred first (preferred nodeAffinity terms on
    # their hostnames, of falling weight, as the shipped Mixtral manifests set them): among
    # the nodes a pod fits on, the first of these wins, so a wake-up from zero lands where
    # the page cache already holds the weights.
    preferred_nodes: Annotated[tuple[str, ...], Listed] = ()
    # Nodes whose page cache holds the weights when the scenario starts: a pre-read ran there
    # (the shipped Mixtral manifests read its file on both its preferred nodes at every node
    # boot: `scaler preread`), so the first start there is a `cold_start`, not an uncached
    # one. Only meaningful with `uncached_cold_start` (validated).
    cached_nodes: Annotated[tuple[str, ...], Listed] = ()

    def busy_service_seconds(self, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
        """Each request's service time with every slot of the replica busy (the slowest
        stream rate): prompt / prefill + output / stream rate. Pure."""
        stream = self.decode_tokens_per_second / (
            1.0 + self.decode_slowdown_per_stream * (self.slots - 1)
        )
        return np.asarray(prompt / self.prefill_tokens_per_second + output / stream)

    @property
    def worst_cold_start_seconds(self) -> float:
        """The longest any start can take, first or warm (what the oracle plans with)."""
        worst = self.cold_start.worst_seconds
        if self.uncached_cold_start is not None:
            worst = max(worst, self.uncached_cold_start.worst_seconds)
        return worst


class TraceTraffic(_Strict):
    """Requests read from a trace file (path relative to the scenario), scaled."""

    kind: Literal["trace"] = "trace"
    file: str
    model: str | None = None
    time_scale: PositiveFloat = 1.0
    rate_scale: PositiveFloat = 1.0
    offset_seconds: NonNegativeFloat = 0.0
    start_seconds: NonNegativeFloat = 0.0  # window of the (time-scaled) trace to replay
    end_seconds: PositiveFloat | None = None


class _Synthetic(_Strict):
    model: str
    duration_seconds: PositiveFloat
    prompt_tokens_mean: PositiveFloat
    output_tokens_mean: PositiveFloat
    token_sigma: NonNegativeFloat = 0.8
    offset_seconds: NonNegativeFloat = 0.0

    @property
    def sizes(self) -> TokenSizes:
        """The token size distribution."""
        return TokenSizes(self.prompt_tokens_mean, self.output_tokens_mean, self.token_sigma)


class PoissonTraffic(_Synthetic):
    """Poisson arrivals at a constant rate."""

    kind: Literal["poisson"]
    rate: PositiveFloat


class DiurnalTraffic(_Synthetic):
    """Poisson arrivals with a daily cosine rate (peak at `peakAtSeconds`)."""

    kind: Literal["diurnal"]
    mean_rate: PositiveFloat
    peak_to_trough: Annotated[float, Field(ge=1, allow_inf_nan=False)]
    period_seconds: PositiveFloat = 86_400.0
    peak_at_seconds: NonNegativeFloat = 14 * 3600.0


class SessionTraffic(_Synthetic):
    """On/off sessions: Poisson session starts, requests within one after think times."""

    kind: Literal["sessions"]
    session_rate: PositiveFloat
    requests_per_session: Annotated[float, Field(ge=1, allow_inf_nan=False)]
    think_seconds: PositiveFloat


Traffic = Annotated[
    TraceTraffic | PoissonTraffic | DiurnalTraffic | SessionTraffic, Field(discriminator="kind")
]


class Outage(_Strict):
    """A time range in which Prometheus answers every query with nothing."""

    start_seconds: NonNegativeFloat
    end_seconds: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> Outage:
        if self.end_seconds <= self.start_seconds:
            raise ValueError("endSeconds must be after startSeconds")
        return self


class MetricsSpec(_Strict):
    """How the autoscalers see the models: through a Prometheus with these settings."""

    scrape_interval_seconds: PositiveFloat = 15.0
    rate_window_seconds: PositiveFloat = 60.0
    metrics_outage: Annotated[tuple[Outage, ...], Listed] = ()


class Scenario(_Strict):
    """One simulation setup: cluster, model profiles, policies and traffic."""

    kind: Literal["Scenario"]
    name: str
    description: str = ""
    seed: int = 0
    policies: str = "../policies"
    nodes: Annotated[tuple[NodeSpec, ...], Listed] = Field(min_length=1)
    models: dict[str, ModelProfile] = Field(min_length=1)
    traffic: Annotated[tuple[Traffic, ...], Listed] = ()
    metrics: MetricsSpec = MetricsSpec()
    # The HPA controller's sync period (kube-controller-manager
    # --horizontal-pod-autoscaler-sync-period, 15 s by default): how often every HPA of the
    # run (scaler's and the HPA-based baselines') reads its metrics and rescales.
    hpa_sync_period_seconds: PositiveFloat = 15.0
    drain_seconds: NonNegativeFloat = 3600.0

    @model_validator(mode="after")
    def _traffic_models(self) -> Scenario:
        for item in self.traffic:
            if item.model is not None and item.model not in self.models:
                raise ValueError(
                    f"traffic for unknown model {item.model!r}; "
                    f"expected one of: {', '.join(self.models)}"
                )
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        for model, profile in self.models.items():
            for field, listed in (
                ("preferredNodes", profile.preferred_nodes),
                ("cachedNodes", profile.cached_nodes),
            ):
                unknown = [n for n in listed if n not in names]
                if unknown:
                    raise ValueError(
                        f"models.{model}.{field}: unknown node(s) {', '.join(unknown)}; "
                        f"expected some of: {', '.join(names)}"
                    )
            if profile.cached_nodes and profile.uncached_cold_start is None:
                raise ValueError(
                    f"models.{model}.cachedNodes: has no effect without uncachedColdStart "
                    "(every start of this model is already a coldStart)"
                )
        return self

    def cluster_nodes(self) -> tuple[Node, ...]:
        """The nodes as the decision core sees them."""
        return tuple(Node(n.name, n.allocatable_gib) for n in self.nodes)


@dataclass(frozen=True, slots=True)
class ScenarioError:
    """One problem in a scenario file (same shape as a policy error)."""

    file: Path
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ScenarioLoadError(Exception):
    """A scenario that cannot be used; carries every error found."""

    def __init__(self, errors: Sequence[ScenarioError | str]) -> None:
        self.errors = tuple(str(e) for e in errors)
        super().__init__("\n".join(self.errors))


def is_scenario_file(path: Path) -> bool:
    """Whether `path` is a YAML file whose top level says ``kind: Scenario``."""
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        return (
            False  # deep nesting, a 4,301-digit integer: not a scenario; the policy check says why
        )
    return isinstance(data, dict) and data.get("kind") == SCENARIO_KIND


def check_scenario(path: Path) -> tuple[Scenario | None, list[ScenarioError]]:
    """Validate one scenario file's schema: (the scenario or None, the errors)."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ScenarioError(path, "", f"cannot read file: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [
            ScenarioError(
                path,
                "",
                f"YAML syntax error: {getattr(exc, 'problem', exc)}",
                mark and mark.line + 1,
            )
        ]
    except (RecursionError, ValueError) as exc:  # deep nesting; an integer Python refuses
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return None, [ScenarioError(path, "", f"YAML error: {problem}")]
    if not isinstance(data, dict) or root is None:
        return None, [ScenarioError(path, "", "expected a mapping with kind: Scenario")]
    try:
        return Scenario.model_validate(data), []
    except ValidationError as exc:
        errors = []
        details = exc.errors()
        for err in details:
            loc = tuple(err["loc"])
            if err["type"] == "too_short" and any(
                tuple(other["loc"])[: len(loc)] == loc and len(other["loc"]) > len(loc)
                for other in details
            ):
                continue  # "at least 1 item" because every item was refused: said already
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            # Union members appear in the location as their tag: drop them from the path.
            shown = tuple(p for p in loc if p not in ("trace", "poisson", "diurnal", "sessions"))
            errors.append(
                ScenarioError(path, ".".join(str(p) for p in shown), message, _line_of(root, shown))
            )
        return None, errors


def _line_of(root: yaml.Node, loc: Sequence[object]) -> int | None:
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


@dataclass(frozen=True)
class PreparedScenario:
    """A scenario ready to run: validated, with its policies and its merged trace."""

    path: Path
    scenario: Scenario
    policies: tuple[ModelPolicy, ...]
    trace: Trace
    warnings: tuple[str, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """Model names in the scenario's order."""
        return tuple(self.scenario.models)

    def policy(self, model: str) -> ModelPolicy:
        """The policy of `model`."""
        return next(p for p in self.policies if p.model == model)

    def memory_gib(self, model: str) -> float:
        """The memory one pod of `model` requests (the profile's, else the policy's)."""
        profile = self.scenario.models[model].memory_gib
        return profile if profile is not None else self.policy(model).placement.memory_gib

    def digest(self) -> str:
        """A sha256 of what a run depends on (scenario, policies, trace; not the file's path):
        shards of one sharded run must have run on the same."""
        digest = hashlib.sha256(self.scenario.model_dump_json().encode())
        for policy in self.policies:
            digest.update(policy.model_dump_json().encode())
        digest.update(repr(self.trace.models).encode())
        for array in (self.trace.time, self.trace.model, self.trace.prompt, self.trace.output):
            digest.update(array.dtype.str.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def prepare(
    path: Path,
    *,
    trace_specs: Sequence[str] = (),
    policies_path: Path | None = None,
    policies: Sequence[ModelPolicy] | None = None,
) -> PreparedScenario:
    """Load a scenario, its policies and its traffic; ScenarioLoadError lists every problem.

    `trace_specs` (``FILE[:MODEL]``) replace the scenario's traffic, unscaled;
    `policies_path` replaces the scenario's policy folder; `policies` (already loaded)
    replace both.
    """
    scenario, errors = check_scenario(path)
    if scenario is None:
        raise ScenarioLoadError(errors)
    base = path.parent
    if policies is None:
        folder = policies_path if policies_path is not None else base / scenario.policies
        try:
            policies = load_policies(folder)
        except PolicyLoadError as exc:
            raise ScenarioLoadError([str(e) for e in exc.errors]) from None
    names = tuple(scenario.models)
    by_model = {p.model: p for p in policies}
    problems = [
        f"{path}: models.{m}: no policy for this model in the policies given"
        for m in names
        if m not in by_model
    ]
    if problems:
        raise ScenarioLoadError(problems)
    chosen = tuple(by_model[m] for m in names)
    warnings: list[str] = [
        f"{path}: policy {p.model!r} has no profile in the scenario; ignored"
        for p in policies
        if p.model not in names
    ]
    parts: list[Trace] = []
    try:
        if trace_specs:
            for spec in trace_specs:
                loaded = traces.read_trace(TraceSource.parse(spec), names)
                warnings.extend(loaded.warnings)
                parts.append(loaded.trace)
        else:
            for i, item in enumerate(scenario.traffic):
                parts.append(_traffic(base, item, names, scenario.seed + i, warnings))
    except TraceError as exc:
        raise ScenarioLoadError([str(exc)]) from None
    trace = traces.merge(parts).relabel(names) if parts else traces.empty_trace(names)
    return PreparedScenario(path, scenario, chosen, trace, tuple(warnings))


def _traffic(
    base: Path, item: Traffic, names: Sequence[str], seed: int, warnings: list[str]
) -> Trace:
    if isinstance(item, TraceTraffic):
        loaded = traces.read_trace(TraceSource(base / item.file, item.model), names)
        warnings.extend(loaded.warnings)
        trace = loaded.trace.time_scaled(item.time_scale)
        end = item.end_seconds if item.end_seconds is not None else math.inf
        if item.start_seconds > 0 or math.isfinite(end):
            trace = trace.window(item.start_seconds, end)
        if item.rate_scale != 1.0:
            trace = trace.rate_scaled(item.rate_scale, seed=seed)
        return trace.shifted(item.offset_seconds)
    if isinstance(item, PoissonTraffic):
        synthetic = traces.poisson(
            item.model,
            rate=item.rate,
            duration=item.duration_seconds,
            sizes=item.sizes,
            seed=seed,
        )
    elif isinstance(item, DiurnalTraffic):
        synthetic = traces.diurnal(
            item.model,
            mean_rate=item.mean_rate,
            peak_to_trough=item.peak_to_trough,
            duration=item.duration_seconds,
            sizes=item.sizes,
            seed=seed,
            period=item.period_seconds,
            peak_at=item.peak_at_seconds,
        )
    else:
        synthetic = traces.sessions(
            item.model,
            session_rate=item.session_rate,
            requests_per_session=item.requests_per_session,
            think_seconds=item.think_seconds,
            duration=item.duration_seconds,
            sizes=item.sizes,
            seed=seed,
        )
    return synthetic.shifted(item.offset_seconds)


def validate_scenario(path: Path) -> tuple[str | None, list[str]]:
    """Check a scenario file fully (schema, policies, traffic): (its name or None, errors)."""
    try:
        prepared = prepare(path)
    except ScenarioLoadError as exc:
        return None, list(exc.errors)
    return prepared.scenario.name, []
