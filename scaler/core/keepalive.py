"""Keep-alive for on-demand models from their own idle-time distribution (pure).

An on-demand model that goes idle can be kept (paying its memory every second) or stopped
(paying a restart when the next request comes: the memory held while it loads, and that
request's wait). This is the ski-rental problem: with no knowledge of the next gap, keeping
the replica for the restart cost's worth of seconds and then stopping is never worse than
twice the offline optimum; with a known distribution of idle gaps the expected cost of a
keep-alive ``t`` is

    E[cost(t)] = E[min(gap, t)] + P(gap > t) × restart cost          (in replica-seconds)

and the best ``t`` is the minimum over the observed gaps (the cost only changes slope at a
gap). Shahrad et al., "Serverless in the Wild" (USENIX ATC'20) keep such a histogram of idle
times per application and pick the keep-alive from it; within a session the gaps are short
and a keep-alive covers them, between sessions they are long and the model goes to zero.

Until `MIN_GAPS` gaps have been seen the keep-alive is the restart cost itself: the
deterministic ski-rental rule (rent for as long as buying costs), which never pays more than
twice the optimum whatever the gaps turn out to be. The policy's ``scaleToZero.idleSeconds``
is the upper bound (the operator's cap on paying for an idle model).
"""

from __future__ import annotations

from functools import lru_cache

MIN_GAPS = 5
"""Gaps needed before the observed distribution replaces ``idleSeconds``."""

MAX_GAPS = 64
"""Gaps remembered (the most recent ones: the distribution may drift)."""


def remember_gap(gaps: tuple[float, ...], gap: float) -> tuple[float, ...]:
    """`gaps` with `gap` appended, the oldest dropped beyond `MAX_GAPS` (pure)."""
    kept = (*gaps, gap)
    return kept[-MAX_GAPS:] if len(kept) > MAX_GAPS else kept


# Pure, and its inputs change only when a gap ends: every idle tick of an on-demand model
# asks again with the same gaps.
@lru_cache(maxsize=4096)
def keep_alive_seconds(
    gaps: tuple[float, ...], *, restart_cost_s: float, prior_s: float, floor_s: float
) -> float:
    """The idle time after which the model goes to zero (pure).

    `restart_cost_s`: one restart's cost in seconds of holding the replica, and the answer
    while fewer than `MIN_GAPS` gaps are known; `prior_s`: the cap; `floor_s`: the least
    keep-alive (a scrape and a tick must have had the chance to see the next request).
    """
    if len(gaps) < MIN_GAPS:
        return min(prior_s, max(floor_s, restart_cost_s))
    ordered = sorted(gaps)
    n = len(ordered)
    best_t, best_cost = 0.0, float("inf")
    # cost(t) = sum(min(g, t)) + (gaps longer than t) * restart; t = 0 and each gap.
    held_below = 0.0  # sum of the gaps shorter than or equal to t
    for index, t in enumerate([0.0, *ordered]):
        if index > 0:
            held_below += t
        longer = n - index
        cost = held_below + longer * t + longer * restart_cost_s
        if cost < best_cost - 1e-9:
            best_t, best_cost = t, cost
    # Keep a little past the chosen gap: that gap itself ended with a request, which the
    # replica is meant to catch.
    return min(prior_s, max(floor_s, best_t * 1.1))
