"""ModelPolicy: the per-model autoscaling policy, as a validated, immutable value.

The schema lives in the core (not in ``scaler.policy``) because ``decide()`` consumes it and
the core may import nothing from the rest of the package. Validation here is pure: field
types, ranges and cross-field rules. Reading YAML files, locating errors in them and
cross-file checks (the same model twice) are the loader's job in ``scaler.policy``.

YAML keys are camelCase, as in Kubernetes objects; Python attributes are snake_case.
Unknown keys are errors.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from scaler.core.signals import Signal

# A Kubernetes object name (RFC 1123 label), used for models, namespaces and deployments.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A PromQL label matcher: name, operator, double-quoted value (escapes allowed).
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')

MAX_SECONDS = 7 * 24 * 3600
"""Longest duration a policy may give (a week): beyond it a value is a typo, and 1e308
would reach the activator as an infinite hold timeout."""
MAX_REPLICAS = 1000
"""Most replicas any count in a policy may name (the HPA's maxReplicas is an int32)."""

PositiveFloat = Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


def _enum_member(kind: type[StrEnum], value: object, what: str) -> object:
    """Turn a YAML string into `kind`'s member, with an error listing the allowed values."""
    if not isinstance(value, str):
        return value  # strict validation reports the wrong type
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise ValueError(f"unknown {what} {value!r}; expected one of: {names}") from None


def _check_matcher(matcher: str) -> str:
    parsed = _MATCHER.match(matcher)
    if parsed is None:
        raise ValueError(
            f'malformed label matcher {matcher!r}; expected name="value" (operators =, !=, =~, !~)'
        )
    if parsed.group(2) in ("=~", "!~"):
        try:
            re.compile(parsed.group(3))
        except re.error as exc:
            raise ValueError(f"invalid regular expression in {matcher!r}: {exc}") from None
    return matcher


LabelMatcher = Annotated[str, AfterValidator(_check_matcher)]
"""A PromQL label matcher such as ``model="mixtral-8x7b"`` or ``namespace=~"cortex|lab"``."""


class _Strict(BaseModel):
    """Base for every policy section: frozen, camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,  # "2" is not a number and 1 is not a boolean in a policy file
    )


class Engine(StrEnum):
    """The serving engine: decides which metric names the Prometheus source queries."""

    VLLM = "vllm"
    LLAMACPP = "llamacpp"


class ModelClass(StrEnum):
    """Always-on models keep at least one replica; on-demand models scale to and from zero."""

    ALWAYS_ON = "always-on"
    ON_DEMAND = "on-demand"


class FallbackMode(StrEnum):
    """What to do after too many consecutive ticks without data. No mode ever scales down."""

    HOLD = "hold"  # keep the current replica count
    AT_LEAST = "atLeast"  # raise to `replicas` if below it, never lower


class TargetRef(_Strict):
    """The Deployment the policy scales."""

    namespace: str
    deployment: str

    @field_validator("namespace", "deployment")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid Kubernetes name (RFC 1123 label)")
        return value


class Replicas(_Strict):
    """Replica bounds; min 0 only for on-demand models."""

    min: int = Field(ge=0, le=MAX_REPLICAS)
    max: int = Field(ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Targets(_Strict):
    """Per-replica targets: one replica is meant to carry this much of each signal.

    A signal left unset is not used for scaling. At least one must be set.
    """

    queue_depth: PositiveFloat | None = None
    tokens_per_second: PositiveFloat | None = None
    inflight_requests: PositiveFloat | None = None
    request_rate: PositiveFloat | None = None

    def items(self) -> tuple[tuple[Signal, float], ...]:
        """The set targets, in the fixed order of ``Signal``. Computed on each call: a cached
        copy travelled into ``model_copy(update=...)``, which then reported the old targets
        (decide() reads them once per policy, into its plan)."""
        values = (
            (Signal.QUEUE_DEPTH, self.queue_depth),
            (Signal.TOKENS_PER_SECOND, self.tokens_per_second),
            (Signal.INFLIGHT_REQUESTS, self.inflight_requests),
            (Signal.REQUEST_RATE, self.request_rate),
        )
        return tuple((signal, v) for signal, v in values if v is not None)

    @model_validator(mode="after")
    def _one_set(self) -> Targets:
        if not self.items():
            raise ValueError("set at least one per-replica target")
        return self


class ScaleDirection(_Strict):
    """Stabilization window and step limit for one direction."""

    stabilization_seconds: NonNegativeSeconds
    max_step: int = Field(
        ge=1, le=MAX_REPLICAS, description="most replicas added (or removed) per period"
    )
    period_seconds: Seconds = 15.0


class ColdStart(_Strict):
    """How long a new replica takes to become ready, and how far back the trend is read.

    ``seconds`` is a usual start: the node's page cache holds the weights (a restart, a wake
    from zero on a node that served the model before). ``uncachedSeconds`` (optional) is the
    first start after the file was fetched, or on a node that never loaded it: the weights are
    read from the volume (Mixtral: 26.4 GB). Which of the two a starting replica is doing is
    not observable, so decide() gives every start the budget of the slower one.
    """

    seconds: Seconds
    trend_window_seconds: Seconds = 60.0
    # A starting replica older than overdue_after_seconds is considered stuck: scale-up holds
    # for starting replicas are lifted so a broken pod cannot block capacity forever.
    overdue_factor: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = 3.0
    uncached_seconds: Seconds | None = None

    @model_validator(mode="after")
    def _uncached_not_faster(self) -> ColdStart:
        if self.uncached_seconds is not None and self.uncached_seconds < self.seconds:
            raise ValueError(
                f"uncachedSeconds ({self.uncached_seconds}) is below seconds ({self.seconds}):"
                " reading the weights from the volume is not faster than from the page cache"
            )
        return self

    @property
    def overdue_after_seconds(self) -> float:
        """When a start counts as stuck: seconds x overdueFactor, and never before a first
        (uncached) start could have finished."""
        return max(self.seconds * self.overdue_factor, self.uncached_seconds or 0.0)


class ScaleToZero(_Strict):
    """On-demand models only: idle period before going to zero and the activation rule."""

    # The longest an idle model is kept before going to zero; the keep-alive itself comes
    # from the model's observed idle gaps (scaler.core.keepalive) once a few are known.
    idle_seconds: Seconds
    # One restart's cost, in seconds of holding the replica (the ski-rental price); unset:
    # the start (coldStart.uncachedSeconds when given, else coldStart.seconds: memory held
    # while loading) + slo.queueWaitSeconds (the wait it imposes on the request that finds
    # the model asleep).
    restart_cost_seconds: Seconds | None = None
    activation_threshold: NonNegativeFloat = 0.0
    activation_signals: tuple[Signal, ...] = (
        Signal.QUEUE_DEPTH,
        Signal.INFLIGHT_REQUESTS,
        Signal.REQUEST_RATE,
    )

    @field_validator("activation_signals", mode="before")
    @classmethod
    def _signals(cls, value: object) -> object:
        # Strict mode would refuse plain strings for the enum; accept the documented names.
        if isinstance(value, list):
            return tuple(_enum_member(Signal, v, "signal") for v in value)
        return value


class Placement(_Strict):
    """Memory one replica needs on a node, and the most replicas one node may hold."""

    memory_gib: PositiveFloat = Field(alias="memoryGiB")
    max_per_node: int = Field(ge=1, le=MAX_REPLICAS)


class SloSizing(_Strict):
    """SLO-driven sizing (``scaler.core.sizing``): how one replica serves requests.

    With this section the replica count is the fewest replicas whose predicted queue wait
    meets ``slo`` (``queueWaitSeconds`` at ``percentile``) for the measured arrival rate, by
    a multi-server queueing model; the per-replica ``targets`` are then the fallback for
    ticks without a request rate or in-flight count. Without it, ``targets`` decide alone.
    """

    slots_per_replica: int = Field(ge=1, le=4096)  # requests one replica serves at once
    # Prior mean time a request holds a slot (prefill + decode); calibrated online from the
    # observed in-flight count and request rate (Little's law).
    service_seconds: Seconds
    # Coefficient of variation of the service time (1 = exponential; LLM outputs: ~1-2).
    service_cv: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 1.0
    # Time constant of the online estimate.
    calibration_seconds: Seconds = 900.0
    # Time constant of the arrivals' index of dispersion (how bursty they are): a variance
    # needs more windows than a mean to settle, 30 one-minute windows by default.
    dispersion_seconds: Seconds = 1800.0
    # From a sample to a decision acting on it: the scrape interval plus a tick. Added to
    # coldStart.seconds it is the reaction time the replicas running now must bridge.
    detection_seconds: NonNegativeSeconds = 20.0
    # Time constant of the arrival-rate average the model is sized for (a short window's
    # rate overrides it only when it is clearly a burst: scaler.core.sizing.arrival_rate).
    rate_horizon_seconds: Seconds = 600.0
    # How many requests' worth of evidence the prior counts for against the measurement.
    prior_requests: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = 20.0
    # The window of the source's request-rate query (rate(...[1m])): how many requests a
    # short-window reading rests on, to tell a burst from noise.
    rate_window_seconds: Seconds = 60.0
    # The percentile the sizing aims at, when it is not the SLO's own: the queueing model's
    # assumptions (Poisson-like arrivals, a fixed reaction time) miss by a margin that
    # depends on the traffic, so `scaler tune` picks the aim that meets the SLO on recorded
    # traffic at least cost. None: ``slo.percentile``.
    aim_percentile: Annotated[float, Field(gt=50, lt=100, allow_inf_nan=False)] | None = None


class DataPolicy(_Strict):
    """When metrics count as stale."""

    stale_after_seconds: Seconds = 60.0


class Fallback(_Strict):
    """After `afterFailures` consecutive ticks without data, apply `mode`."""

    after_failures: int = Field(ge=1, le=1_000_000)
    mode: FallbackMode = FallbackMode.HOLD
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> object:
        return _enum_member(FallbackMode, value, "fallback mode")


class Slo(_Strict):
    """The service level the simulator and tuner score against."""

    queue_wait_seconds: Seconds
    percentile: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 95.0


class ServiceRoute(_Strict):
    """Where the activator (``scaler activator``) forwards the model's requests, and how it
    recognises them. Every field is optional: the activator fills the Service name from
    ``target.deployment``, the port from the engine's default (vLLM 8000, llama.cpp 8080) and
    the path prefix from ``/<model>``; a request matches by ``host`` first, then by prefix.
    """

    name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    host: str | None = None  # exact Host header (port ignored), e.g. "mixtral.cortex.lan"
    path_prefix: str | None = None  # "/mixtral": stripped before forwarding

    @field_validator("name")
    @classmethod
    def _service_name(cls, value: str | None) -> str | None:
        if value is not None and (not _DNS_LABEL.match(value) or len(value) > 63):
            raise ValueError(f"{value!r} is not a valid Service name (RFC 1123 label)")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > 253 or not all(_DNS_LABEL.match(p) for p in value.split("."))
        ):
            raise ValueError(f"{value!r} is not a lowercase DNS host name (no port, no scheme)")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith("/")
            or value == "/"
            or value.endswith("/")
            or any(c in value for c in "?#% ")
        ):
            raise ValueError(
                f"{value!r} is not a path prefix: starts with '/', is not '/', no trailing '/'"
                ", no '?', '#', '%' or spaces"
            )
        return value


class ModelPolicy(_Strict):
    """Everything scaler needs to know to scale one model."""

    model: str
    target: TargetRef
    engine: Engine
    model_class: ModelClass = Field(alias="class")
    matchers: tuple[LabelMatcher, ...]
    replicas: Replicas
    targets: Targets
    tolerance: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1
    scale_up: ScaleDirection
    scale_down: ScaleDirection
    cold_start: ColdStart
    scale_to_zero: ScaleToZero | None = Field(default=None, validate_default=True)
    placement: Placement
    sizing: SloSizing | None = None
    data: DataPolicy = DataPolicy()
    fallback: Fallback
    slo: Slo
    # Per-signal PromQL overrides: see scaler.sources for the template variables.
    queries: dict[str, str] = Field(default_factory=dict)
    # Routing for the cold-start activator; defaults make every shipped policy routable.
    service: ServiceRoute = ServiceRoute()

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: object) -> object:
        return _enum_member(Engine, value, "engine")

    @field_validator("model_class", mode="before")
    @classmethod
    def _class(cls, value: object) -> object:
        return _enum_member(ModelClass, value, "class")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid model name (lowercase RFC 1123 label)")
        return value

    @field_validator("matchers", mode="before")
    @classmethod
    def _matchers_list(cls, value: object) -> object:
        if isinstance(value, list | tuple) and not value:
            # Without matchers the queries would sum every model's series together.
            raise ValueError("at least one label matcher is required")
        return tuple(value) if isinstance(value, list) else value

    @field_validator("queries")
    @classmethod
    def _queries(cls, value: dict[str, str]) -> dict[str, str]:
        known = {s.value for s in Signal}
        for name, query in value.items():
            if name not in known:
                raise ValueError(
                    f"unknown signal {name!r}; expected one of: {', '.join(sorted(known))}"
                )
            if not query.strip():
                raise ValueError(f"query for {name!r} is empty")
        return value

    # Cross-field rules are field validators reading the fields validated before them
    # (info.data), not one model validator: that way they still run, and are reported
    # together with, errors in unrelated fields.
    @field_validator("replicas")
    @classmethod
    def _min_for_class(cls, value: Replicas, info: ValidationInfo) -> Replicas:
        if info.data.get("model_class") is ModelClass.ALWAYS_ON and value.min < 1:
            raise ValueError("min is 0 on an always-on model; use class: on-demand")
        return value

    @field_validator("scale_to_zero")
    @classmethod
    def _zero_for_class(cls, value: ScaleToZero | None, info: ValidationInfo) -> ScaleToZero | None:
        model_class = info.data.get("model_class")
        if model_class is ModelClass.ALWAYS_ON and value is not None:
            raise ValueError("scale-to-zero is set on an always-on model; use class: on-demand")
        if model_class is ModelClass.ON_DEMAND and value is None:
            raise ValueError("an on-demand model needs a scaleToZero section")
        return value

    @property
    def restart_cost_seconds(self) -> float:
        """What one restart from zero costs, in seconds of holding a replica (on-demand)."""
        rule = self.scale_to_zero
        if rule is not None and rule.restart_cost_seconds is not None:
            return rule.restart_cost_seconds
        # The scheduler does not know which node's page cache holds the weights: a restart
        # may land on one that reads them from the volume, so it is priced as that start.
        start = self.cold_start.uncached_seconds or self.cold_start.seconds
        return start + self.slo.queue_wait_seconds

    @property
    def slo_miss_ratio(self) -> float:
        """The fraction of requests allowed to wait longer than the SLO threshold."""
        return max(1e-6, 1.0 - self.slo.percentile / 100.0)

    @property
    def sizing_miss_ratio(self) -> float:
        """The miss ratio the SLO sizing aims at: ``sizing.aimPercentile``'s, else the SLO's."""
        aim = self.sizing.aim_percentile if self.sizing is not None else None
        return self.slo_miss_ratio if aim is None else max(1e-6, 1.0 - aim / 100.0)

    @property
    def on_demand(self) -> bool:
        """Whether scaler itself moves this model between zero and one."""
        return self.model_class is ModelClass.ON_DEMAND
