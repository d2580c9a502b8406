"""The pure fits behind ``scaler calibrate``: counters, ratios, decode regression, log-normal,
and the service time as the decision core's own estimator makes it."""

from __future__ import annotations

import math

import pytest

from scaler.core.calibration import (
    counter_increases,
    fit_decode,
    fit_lognormal,
    fit_service,
    ratio,
)
from scaler.core.sizing import ServiceEstimate

NAN = math.nan


def test_counter_increases_count_a_reset_from_zero() -> None:
    """A drop is a restart: the step gets the new value, and the reset is counted."""
    found = counter_increases([10.0, 12.0, 15.0, 3.0, 5.0])
    assert found.steps == (2.0, 3.0, 3.0, 2.0)
    assert found.resets == 1


def test_counter_increases_count_a_pod_born_in_the_range_from_zero() -> None:
    """A series absent at the first edge started inside the range: its first value counts."""
    found = counter_increases([NAN, NAN, 4.0, 6.0])
    assert found.steps[1:] == (4.0, 2.0)
    assert math.isnan(found.steps[0])
    assert found.resets == 0
    assert found.gaps == ()


def test_counter_increases_report_a_gap_and_keep_its_increase() -> None:
    """Missing samples between two present ones are a gap; the increase lands after it."""
    found = counter_increases([1.0, 2.0, NAN, NAN, 7.0])
    assert found.gaps == ((2, 3),)
    assert found.steps[3] == 5.0
    assert sum(v for v in found.steps if not math.isnan(v)) == 6.0


def test_ratio_is_the_ratio_of_sums_with_an_interval_around_it() -> None:
    """Tokens over seconds: ΣX/ΣY; a noisy ratio has a wider interval than an exact one."""
    exact = ratio([50.0, 100.0, 150.0], [1.0, 2.0, 3.0])
    assert exact is not None
    assert exact.value == pytest.approx(50.0)
    assert exact.low == pytest.approx(50.0)
    assert exact.high == pytest.approx(50.0)
    noisy = ratio([40.0, 120.0, 150.0, 90.0], [1.0, 2.0, 3.0, 2.0])
    assert noisy is not None
    assert noisy.low < noisy.value < noisy.high
    assert ratio([0.0], [0.0]) is None


def test_fit_decode_recovers_speed_and_slowdown_from_exact_readings() -> None:
    """Steps generated at known busy streams: itl = (1 + s·(b-1))/d gives back d and s."""
    decode, slowdown = 11.0, 0.5
    busy = [1.0, 1.5, 2.0, 3.0, 4.0, 2.5, 1.2]
    itl = [(1 + slowdown * (b - 1)) / decode for b in busy]
    fit = fit_decode(itl, busy, [100.0] * len(busy))
    assert fit is not None
    assert fit.decode.value == pytest.approx(decode)
    assert fit.slowdown is not None
    assert fit.slowdown.value == pytest.approx(slowdown)
    assert not fit.alone


def test_fit_decode_rests_on_lone_requests_when_it_has_them() -> None:
    """Noisy busy readings dilute the regression; steps marked alone set the speed."""
    busy_true = [1.0] * 6 + [2.0, 3.0, 2.0, 4.0]
    itl = [(1 + 0.5 * (b - 1)) / 6.5 for b in busy_true]
    seen = [1.0] * 6 + [1.4, 3.5, 1.6, 3.0]  # what a gauge a scrape apart made of them
    fit = fit_decode(itl, seen, [50.0] * 10, [b == 1.0 for b in busy_true])
    assert fit is not None
    assert fit.alone
    assert fit.decode.value == pytest.approx(6.5)


def test_fit_lognormal_gives_the_median_and_sigma_of_the_logs() -> None:
    """Durations e^(μ±σ) give median e^μ and sigma σ (sample standard deviation)."""
    mu, sigma = math.log(40.0), 0.3
    durations = [math.exp(mu + sigma), math.exp(mu - sigma)] * 10
    fit = fit_lognormal(durations)
    assert fit is not None
    assert fit.median.value == pytest.approx(40.0)
    assert fit.sigma == pytest.approx(sigma * math.sqrt(20 / 19))
    assert fit.median.low < 40.0 < fit.median.high
    assert fit.median.samples == 20
    assert fit_lognormal([]) is None


def test_fit_service_is_what_the_live_estimator_holds() -> None:
    """The online figure equals ServiceEstimate fed the same steps with the policy's horizon;
    steady readings give Little's law busy / rate over the range."""
    times = [15.0 * k for k in range(400)]
    rates = [0.2] * 400
    busy = [1.6] * 400
    fit = fit_service(
        times, rates, busy, prior_seconds=90.0, prior_requests=20.0, horizon=900.0,
        rate_horizon=600.0, dispersion_horizon=1800.0,
    )  # fmt: skip
    assert fit is not None
    live = ServiceEstimate()
    for t, r, b in zip(times, rates, busy, strict=True):
        live = live.observe(
            rate=r, busy=b, now=t, horizon=900.0, rate_horizon=600.0, dispersion_horizon=1800.0,
            window_s=15.0,
        )  # fmt: skip
    assert fit.online_seconds == pytest.approx(live.service_seconds(90.0, 20.0, 900.0))
    # 0.2/s over ~100 minutes: ~1,200 requests, Little's law 1.6 / 0.2 = 8 s, shrunk
    # towards the 90 s prior by its 20 requests' worth (as the live estimator does).
    assert fit.requests == pytest.approx(0.2 * 15 * 399, rel=0.1)
    shrunk = (90.0 * 20.0 + 8.0 * fit.requests) / (20.0 + fit.requests)
    assert fit.service_seconds == pytest.approx(shrunk)
    assert 8.0 < fit.service_seconds < 9.5
