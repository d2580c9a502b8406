"""SLO-driven sizing: the fewest replicas whose slots hold the coming requests (pure).

Every replica has ``slots`` request slots (llama-server ``-np``, vLLM's concurrent
sequences); requests arrive at rate λ and hold a slot for a mean service time S. A replica
asked for now serves only after a reaction time R (detection + cold start), so the replicas
running now must hold what comes until then: the requests in service that are still there
(each with probability ``exp(-R/S)``: a binomial, since how many there are is known) plus
the arrivals of R still in the system (``λ·S·(1 - exp(-R/S))``), counted as a Poisson, or a
negative binomial when arrivals are burstier than Poisson (`size_for_slo`). A request may
wait up to the SLO threshold W, in which about ``slots·W/S`` slots of a replica free up, so a
replica holds ``slots·(1 + W/S)``.

The steady-state wait at the SLO percentile is reported alongside (`wait_quantile`): Erlang C,
``P(wait > t) = C(c, a)·exp(-(c - a)·t/S)`` for ``c`` slots and load ``a = λ·S``, with the
time constant scaled by Allen–Cunneen's ``(ca² + cs²) / 2`` for bursty arrivals and
non-exponential service (heavy-tailed LLM output lengths).

Sources: Erlang C and its tail, e.g. Harchol-Balter, "Performance Modeling and Design of
Computer Systems" (2013), ch. 14; Allen–Cunneen: Allen, "Probability, Statistics and
Queueing Theory" (1990); llm-d's Workload Variant Autoscaler sizes LLM servers from the same
kind of queueing model over a per-model performance profile.

The service time comes from `ServiceEstimate`: an online estimate by Little's law (busy
slots = throughput × service time) over exponentially weighted averages of what the
metrics source reports, shrunk towards the policy's prior while few requests were seen.
The same estimator serves the live loop and the simulator (they both call ``decide()``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

# A named tuple from all its fields in order, as ``cls(*fields)`` makes it: the generated
# ``__new__`` is a Python function that makes the same call, a frame more per tuple (the
# sizing and the service estimate make one each per model and tick).
_new_tuple = tuple.__new__

# Beyond this many slots the Erlang recursion is cut short: no homelab model has that many,
# and C(c, a) is below 1e-12 long before (it keeps the hot path bounded for huge policies).
_MAX_SLOTS = 4096


def erlang_c(servers: int, load: float) -> float:
    """P(an arrival has to wait) in M/M/c with `servers` and offered load `load` (pure).

    1.0 when the load reaches the servers (the queue grows without bound), 0.0 at no load.
    Computed by the Erlang B recursion, which is stable for any size (no factorials).
    """
    if load <= 0.0:
        return 0.0
    if servers <= 0 or load >= servers:
        return 1.0
    blocked = 1.0
    for k in range(1, min(servers, _MAX_SLOTS) + 1):
        blocked = load * blocked / (k + load * blocked)
    rho = load / servers
    return blocked / (1.0 - rho + rho * blocked)


def variability(arrival_scv: float, service_cv: float) -> float:
    """Allen–Cunneen's factor ``(ca² + cs²) / 2``: 1 for Poisson arrivals and exponential
    service; `arrival_scv` is ca² (the arrivals' squared coefficient of variation, estimated
    by the index of dispersion of counts), `service_cv` is cs (pure)."""
    return (arrival_scv + service_cv * service_cv) / 2.0


def wait_quantile(
    servers: int, load: float, service_s: float, miss: float, spread: float = 1.0
) -> float:
    """The queue wait that a fraction `1 - miss` of requests stays under (inf if overloaded)."""
    if load <= 0.0:
        return 0.0
    if servers <= 0 or load >= servers:
        return math.inf
    waits = erlang_c(servers, load)
    if waits <= miss:
        return 0.0
    return math.log(waits / miss) * service_s * spread / (servers - load)


class Sizing(NamedTuple):
    """What the queueing model says for one model at one tick (for decisions and dashboards)."""

    replicas: int  # fewest replicas meeting the SLO (at most `limit`)
    arrival_rate: float  # λ used, requests/s
    service_seconds: float  # S used
    load: float  # a = λ·S, busy slots
    predicted_miss: float  # P(overflow one reaction time ahead) with `replicas`
    dispersion: float = 1.0  # how much wider than Poisson the arrivals' count was taken
    spread: float = 1.0  # Allen–Cunneen's (ca² + cs²) / 2, for the predicted wait
    slots: int = 1  # per replica
    miss: float = 0.005  # the SLO's miss ratio the wait is predicted at

    @property
    def predicted_wait_s(self) -> float:
        """The steady-state queue wait at the SLO percentile with `replicas` (Erlang C,
        Allen–Cunneen scaled; inf when overloaded). Computed when read: the dashboards and
        the API want it, the decision itself does not."""
        return wait_quantile(
            self.replicas * self.slots, self.load, self.service_seconds, self.miss, self.spread
        )


def count_above(
    count: int, present: float, survive: float, arrivals: float, dispersion: float
) -> float:
    """P(B + A > `count`) for B the survivors of the `present` requests in the system, each
    still there with probability `survive`, and A the arrivals' count with mean `arrivals`
    and `dispersion` times the Poisson variance (pure).

    The requests present are known, so B is binomial (a fractional `present`, an average of
    readings, adds one request with its fraction of the probability); A is Poisson, or
    negative binomial when it is overdispersed (a Poisson whose rate itself varies: bursty
    traffic)."""
    return _PresentTail(present, survive, arrivals, dispersion).above(count)


class _CountTail:
    """The arrivals' count A of `count_above`: P(A > k) for non-decreasing k (`fewest`) or
    its cdf (`extend_cdf`), in one pass over the pmf however many k are asked (the sizing
    asks for one per replica count)."""

    __slots__ = ("_below", "_end", "_fail", "_k", "_mean", "_shape", "_term")

    def __init__(self, mean: float, dispersion: float) -> None:
        ratio = dispersion if dispersion > 1.0 else 1.0
        self._mean = mean
        if ratio <= 1.0 + 1e-9 or mean <= 0.0:
            self._shape = 0.0  # Poisson
            self._fail = 0.0
            self._term = math.exp(-mean)
        else:  # negative binomial with this variance-to-mean ratio
            self._shape = mean / (ratio - 1.0)
            self._fail = 1.0 - 1.0 / ratio
            self._term = math.exp(-self._shape * math.log(ratio))
        # Past twelve standard deviations above the mean nothing is left to count.
        self._end = mean + 12.0 * math.sqrt(ratio * mean) + 30.0
        self._k = 0
        self._below = self._term

    def extend_cdf(self, cdf: list[float], top: int) -> None:
        """Append ``P(A <= m)`` to `cdf` (which holds m = 0 .. len - 1) up to m = `top`: the
        pmf walk `fewest` inlines, for `_PresentTail`, which needs every term."""
        k, term, below = self._k, self._term, self._below
        mean, end, shape, fail = self._mean, self._end, self._shape, self._fail
        m = len(cdf)
        while m <= top:
            if mean <= 0.0 or m > end:
                cdf.append(1.0)
            else:
                if shape == 0.0:
                    while k < m:
                        k += 1
                        term *= mean / k
                        below += term
                else:
                    while k < m:
                        term *= (k + shape) / (k + 1) * fail
                        k += 1
                        below += term
                # 1 - P(A > m) clamped, as `fewest` computes the tail: the same floats.
                tail = 1.0 - below
                cdf.append(1.0 - (0.0 if not tail > 0.0 else (tail if tail < 1.0 else 1.0)))
            m += 1
        self._k, self._term, self._below = k, term, below

    def fewest(self, per_replica: float, miss: float, limit: int) -> tuple[int, float]:
        """The fewest replicas (1 to `limit`) of `per_replica` requests' capacity each (see
        `_CAPACITY_TOLERANCE`) whose whole requests X overruns with probability at most `miss`,
        and that probability.

        The same walk as `above` for each replica count in turn, in one call: the sizing
        tries two or three counts per model and tick, and a method call per count (and one
        more for its whole requests) cost more than the pmf terms they add."""
        replicas = 1
        # floor(capacity + _CAPACITY_TOLERANCE): the whole requests a capacity holds.
        count = math.floor(per_replica + _CAPACITY_TOLERANCE)
        mean, end = self._mean, self._end
        shape, fail = self._shape, self._fail
        k, term, below = self._k, self._term, self._below
        while True:
            if count < 0:
                tail = 1.0
            elif mean <= 0.0 or count > end:
                tail = 0.0
            else:
                if shape == 0.0:
                    while k < count:
                        k += 1
                        term *= mean / k
                        below += term
                else:
                    while k < count:
                        term *= (k + shape) / (k + 1) * fail
                        k += 1
                        below += term
                tail = 1.0 - below
                tail = 0.0 if not tail > 0.0 else (tail if tail < 1.0 else 1.0)
            if not tail > miss or replicas >= limit:
                break
            replicas += 1
            count = math.floor(replicas * per_replica + _CAPACITY_TOLERANCE)
        self._k, self._term, self._below = k, term, below
        return replicas, tail


class _PresentTail:
    """P(B + A > k) of `count_above`, for non-decreasing k: the survivors' binomial pmf
    convolved with the arrivals' cdf, which grows only as far as the largest k asked."""

    __slots__ = ("_arrivals", "_cdf", "_low", "_weights")

    def __init__(self, present: float, survive: float, arrivals: float, dispersion: float):
        self._arrivals = _CountTail(arrivals, dispersion)
        self._cdf: list[float] = []  # P(A <= m) for m = 0, 1, ...
        self._weights, self._low = _survivors(present, survive)

    def above(self, count: int) -> float:
        """P(B + A > `count`); `count` never below the one asked before."""
        if count < self._low:
            return 1.0
        top = count - self._low  # the most arrivals that fit beside the fewest survivors
        cdf = self._cdf
        if len(cdf) <= top:
            self._arrivals.extend_cdf(cdf, top)
        below = 0.0
        for weight in self._weights:  # survivors low, low + 1, ...: room for one fewer
            if top < 0:
                break
            below += weight * cdf[top]
            top -= 1
        tail = 1.0 - below
        return 0.0 if not tail > 0.0 else (tail if tail < 1.0 else 1.0)

    def fewest(self, per_replica: float, miss: float, limit: int) -> tuple[int, float]:
        """As `_CountTail.fewest`, for the survivors and the arrivals together."""
        replicas = 1
        tail = self.above(math.floor(per_replica + _CAPACITY_TOLERANCE))
        while tail > miss and replicas < limit:
            replicas += 1
            tail = self.above(math.floor(replicas * per_replica + _CAPACITY_TOLERANCE))
        return replicas, tail


_WHOLE_PMF_UP_TO = 32
"""Requests present up to which `_survivors` walks the whole binomial from ``gone ** n``,
cheaper than a cut range from a log-gamma start (three calls to lgamma and two to log per
model and tick); ``gone ** n`` is taken only while it is far from underflow."""


def _survivors(present: float, survive: float) -> tuple[list[float], int]:
    """The pmf of how many of `present` requests are still in the system, each with
    probability `survive`, as (the weights of low, low + 1, ..., high; low) (pure).

    The whole requests are a binomial, cut twelve standard deviations either side of its
    mean (a long queue does not make the walk long); a fraction left over (`present` is
    an average of readings) is one more request, there with its fraction of `survive`."""
    whole = int(present)
    extra = (present - whole) * survive
    if whole <= 0 or survive <= 0.0:
        weights, low = [1.0], 0
    elif survive >= 1.0:
        weights, low = [1.0], whole
    else:
        gone = 1.0 - survive
        # A few requests (nearly always): the whole pmf from gone ** whole, which is cheap.
        term = gone**whole if whole <= _WHOLE_PMF_UP_TO else 0.0
        if term > 1e-280:
            low, high = 0, whole
        else:
            mean = whole * survive
            spread = 12.0 * math.sqrt(mean * gone) + 2.0
            low = int(mean - spread) if mean > spread else 0
            high = int(mean + spread) if mean + spread < whole else whole
            # The first term in logarithms: gone ** whole underflows for long queues.
            term = math.exp(
                math.lgamma(whole + 1)
                - math.lgamma(low + 1)
                - math.lgamma(whole - low + 1)
                + low * math.log(survive)
                + (whole - low) * math.log(gone)
            )
        odds = survive / gone
        weights = [term]
        for j in range(low, high):
            term *= (whole - j) / (j + 1) * odds
            weights.append(term)
    if extra > 0.0:
        # One more request, there with probability `extra`: each count is reached by the
        # one below it with it, or by itself without it.
        stay = 1.0 - extra
        before = weights[0]
        mixed = [stay * before]
        for w in weights[1:]:
            mixed.append(stay * w + extra * before)
            before = w
        mixed.append(extra * before)
        weights = mixed
    return weights, low


_CAPACITY_TOLERANCE = 0.1
"""Requests by which a capacity may fall short of the next whole one and still count as it.

A replica's capacity ``slots × (1 + W/S)`` is counted in whole requests, rounded down, but
a hair short of a whole number counts as it: the capacity moves with the service estimate
S, and where W is about S (Mixtral: 90 s for 90 s requests, 2 slots) an estimate wobbling
by a percent either side of 90 s made a replica hold 4 requests one tick and 3 the next, so
a second replica started and stopped within a session. A tenth of a request covers an
estimate up to 5 % long there. `_CountTail.fewest` applies it.
"""


def size_for_slo(
    *,
    arrival_rate: float,
    in_system: float,
    service_seconds: float,
    slots: int,
    wait_s: float,
    miss: float,
    dispersion: float,
    service_cv: float,
    reaction_s: float,
    limit: int,
) -> Sizing:
    """The fewest replicas (1 to `limit`) that hold the requests expected in the system one
    reaction time from now, but for a fraction `miss` of the time (pure).

    A replica asked for now is serving after `reaction_s` (a scrape, a tick, a cold start):
    until then the replicas running now are all there is, so they must hold what the
    requests in the system now and the arrivals of the reaction time add up to. A request
    may queue up to the SLO threshold: in that time about ``slots × wait_s / S`` slots of
    each replica free up, so each replica holds ``slots × (1 + wait_s / S)`` requests before
    one waits too long. The count one reaction time ahead is the requests still in service
    (each survives with probability ``exp(-reaction / S)``: a binomial over the `in_system`
    known, never more than they are) plus the arrivals still in the
    system (mean ``λ·S·(1 - exp(-reaction / S))``), the infinite-server approximation;
    `dispersion` > 1 (bursty arrivals) widens the arrivals' count (negative binomial). The
    steady-state wait (Erlang C, Allen–Cunneen scaled by `dispersion` and `service_cv`) is
    reported with it.
    """
    load = arrival_rate * service_seconds
    spread = variability(dispersion if dispersion > 1.0 else 1.0, service_cv)
    survive = math.exp(-reaction_s / service_seconds)
    arrivals = load * (1.0 - survive)
    per_replica = slots * (1.0 + wait_s / service_seconds)

    # The fewest replicas whose slots the count overruns rarely enough; with nobody in the
    # system (most models most of the time) only the arrivals count.
    count = (
        _PresentTail(in_system, survive, arrivals, dispersion)
        if in_system > 0.0
        else _CountTail(arrivals, dispersion)
    )
    replicas, tail = count.fewest(per_replica, miss, limit)
    return _new_tuple(
        Sizing,
        (replicas, arrival_rate, service_seconds, load, tail, dispersion, spread, slots, miss),
    )


def arrival_rate(
    short: float, window_s: float, long: float | None, z: float = 1.0, *, falls: bool = True
) -> float:
    """The arrival rate to size for: the long-run mean, unless the short window proves it is
    more, or (`falls`) that it is less (pure).

    At homelab rates a 1-minute ``rate()`` is mostly noise: one request in a quiet minute
    reads as several times the real rate, and sizing for it buys replicas for nothing. The
    short window counts only as far as its count ``n`` proves, `z` Poisson standard
    deviations either side (``(n ± z·√n) / window``): above the long-run mean its lower
    edge is taken, so two requests in a minute prove nothing and a flash crowd of twenty
    proves most of itself, as Knative's panic window overrides its stable window only when
    the load clearly jumped; below the mean its upper edge is taken, so the minute after a
    burst is sized for what it still shows, not for the burst the long average remembers
    (Knative sizes on its 60 s stable window both ways). A quiet minute's edge is 0: the
    requests still in the system are counted apart, and the sizing's reaction time is what
    a returning burst costs. `falls` is False where the counter cannot prove a fall (it
    misses requests the busy slots show). Without a long-run mean yet (the first reading),
    the short window's rate is taken as it is.
    """
    if long is None:
        return short  # nothing to tell noise from: the reading as it is
    count, expected = short * window_s, long * window_s
    spread = z * math.sqrt(count)
    if count - spread > expected:
        return (count - spread) / window_s
    if falls and count + spread < expected:
        return (count + spread) / window_s
    return long


_MIN_DISPERSION_REQUESTS = 30.0
"""Requests seen before the index of dispersion replaces Poisson's 1."""


class ServiceEstimate(NamedTuple):
    """The online estimate of a model's mean service time, carried in the model's state.

    `rate` and `busy` accumulate exponentially weighted averages (time constant: the policy's
    ``sizing.calibrationSeconds``, the horizon) of the request rate and of the busy slots
    (in-flight minus queued), both as the metrics source reports them, starting from zero, so
    that ``rate × horizon`` is about the number of requests they rest on; `updated` is when
    they were last folded in. By Little's law busy slots = throughput × service time, and in
    a steady state the throughput is the arrival rate.

    The index of dispersion (`arrival_scv`) averages over its own, longer horizon
    (``sizing.dispersionSeconds``): a variance rests on the number of independent windows it
    sees, and over the 900 s service horizon, fifteen 1-minute windows, it swung between
    Poisson and twice that from one burst to the next.
    """

    rate: float = 0.0
    busy: float = 0.0
    weight: float = 0.0  # 1 - exp(-time observed / horizon): divides out the start from zero
    # The arrival rate averaged over the shorter rate horizon, and its weight likewise.
    level: float = 0.0
    level_weight: float = 0.0
    updated: float | None = None
    # The request rate and the mean square of the short window's request count, averaged
    # over the dispersion horizon, and their weight, for the index of dispersion:
    # Var(count) / E[count] is 1 for Poisson arrivals.
    count_rate: float = 0.0
    count_sq: float = 0.0
    count_weight: float = 0.0

    def observe(
        self,
        *,
        rate: float,
        busy: float,
        now: float,
        horizon: float,
        rate_horizon: float,
        dispersion_horizon: float,
        window_s: float,
    ) -> ServiceEstimate:
        """The estimate with the span since the last observation folded in (pure)."""
        if self.updated is None:
            return self._replace(updated=now)  # a first reading covers no time span yet
        if now <= self.updated:
            return self
        # A gap longer than a horizon is not bridged: the reading stands for one horizon.
        span = now - self.updated
        keep = math.exp(-(span if span < horizon else horizon) / horizon)
        keep_level = math.exp(-(span if span < rate_horizon else rate_horizon) / rate_horizon)
        keep_count = math.exp(
            -(span if span < dispersion_horizon else dispersion_horizon) / dispersion_horizon
        )
        fold, fold_level, fold_count = 1.0 - keep, 1.0 - keep_level, 1.0 - keep_count
        old_rate, old_busy, weight, level, level_weight, _, count_rate, count_sq, count_weight = (
            self
        )
        count = rate * window_s
        # Every field, in order: this runs once per model and tick (a 1,000-model tick's
        # hot path), see _new_tuple.
        return _new_tuple(
            ServiceEstimate,
            (
                keep * old_rate + fold * rate,
                keep * old_busy + fold * busy,
                keep * weight + fold,
                keep_level * level + fold_level * rate,
                keep_level * level_weight + fold_level,
                now,
                keep_count * count_rate + fold_count * rate,
                keep_count * count_sq + fold_count * count * count,
                keep_count * count_weight + fold_count,
            ),
        )

    def arrival_scv(
        self,
        window_s: float,
        dispersion_horizon: float,
        min_requests: float = _MIN_DISPERSION_REQUESTS,
    ) -> float:
        """The arrivals' squared coefficient of variation, by the index of dispersion of the
        short window's counts (1: Poisson; bursty traffic more), clamped to [0.5, 20]; 1
        until `min_requests` requests were seen over the dispersion horizon. Overlapping
        windows read the same requests twice, which correlates successive counts but does
        not bias their variance."""
        if self.count_weight <= 0.0 or self.count_rate * window_s <= 0.0:
            return 1.0
        if self.count_rate * dispersion_horizon < min_requests:
            return 1.0
        mean = self.count_rate / self.count_weight * window_s
        variance = self.count_sq / self.count_weight - mean * mean
        index = variance / mean
        index = index if index > 0.5 else 0.5
        return index if index < 20.0 else 20.0

    def profile(
        self,
        *,
        prior_s: float,
        prior_requests: float,
        horizon: float,
        dispersion_horizon: float,
        window_s: float,
        service_cv: float,
    ) -> tuple[float, float, float]:
        """(mean service time, the arrivals' count dispersion, the throughput the busy slots
        prove) in one call: `service_seconds`, ``variability(arrival_scv, service_cv)`` and
        ``mean_busy / service time`` (the decision's hot path asks for the three together).

        The methods' expressions written out, on the fields read once: the five calls they
        make cost more than their arithmetic. tests/core/test_sizing.py checks that it
        answers what the methods do."""
        rate, busy, weight, _, _, _, count_rate, count_sq, count_weight = self
        seen = rate * horizon  # requests_seen
        # service_seconds
        if seen <= 0.0:
            seconds = prior_s
        else:
            seconds = (prior_s * prior_requests + busy / rate * seen) / (prior_requests + seen)
        # arrival_scv, at the default min_requests
        if (
            count_weight <= 0.0
            or count_rate * window_s <= 0.0
            or count_rate * dispersion_horizon < _MIN_DISPERSION_REQUESTS
        ):
            scv = 1.0
        else:
            mean = count_rate / count_weight * window_s
            index = (count_sq / count_weight - mean * mean) / mean
            index = index if index > 0.5 else 0.5
            scv = index if index < 20.0 else 20.0
        mean_busy = busy / weight if weight > 0.0 else 0.0
        return seconds, (scv + service_cv * service_cv) / 2.0, mean_busy / seconds

    def mean_busy(self) -> float:
        """The busy slots averaged over the calibration horizon (0 before any span)."""
        return self.busy / self.weight if self.weight > 0.0 else 0.0

    def mean_rate(self) -> float | None:
        """The arrival rate over the rate horizon, None before any span was observed."""
        return self.level / self.level_weight if self.level_weight > 0.0 else None

    def requests_seen(self, horizon: float) -> float:
        """About how many requests the averages rest on."""
        return self.rate * horizon

    def service_seconds(self, prior: float, prior_requests: float, horizon: float) -> float:
        """Mean service time: Little's law (busy / rate), shrunk towards `prior` as if the
        prior were `prior_requests` requests' worth of evidence."""
        seen = self.requests_seen(horizon)
        if seen <= 0.0:
            return prior
        measured = self.busy / self.rate
        return (prior * prior_requests + measured * seen) / (prior_requests + seen)
