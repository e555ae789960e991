"""The statistics of the A/B report and of holdouts: intervals for a rate and for a
difference of rates, an always-valid sequential test that may be read every day, the sample
it needs, and the sample-ratio check.

Methods:
- Wilson score interval for a proportion: E. B. Wilson (1927), "Probable inference, the law
  of succession, and statistical inference", JASA 22:209–212.
- Difference of two proportions, fixed sample: Newcombe's hybrid score interval (method 10 in
  R. G. Newcombe (1998), "Interval estimation for the difference between independent
  proportions: comparison of eleven methods", Statistics in Medicine 17:873–890).
- Sequential: the mixture sequential probability ratio test (mSPRT) with a normal mixture
  N(0, τ²) over the difference of two rates, on its normal approximation, as in R. Johari,
  P. Koomen, L. Pekelis, D. Walsh (2017), "Peeking at A/B tests: why it matters, and what to
  do about it", KDD '17, and R. Johari, L. Pekelis, D. Walsh (2022), "Always valid inference:
  continuous monitoring of A/B tests", Operations Research 70(3). Its confidence sequence
  holds at every sample size at once (H. Robbins (1970), "Statistical methods related to
  the law of the iterated logarithm"), so looking every day does not raise the error rate.
- Sample-ratio mismatch: Pearson's chi-square goodness of fit of the exposures to the
  weights (Fabijan et al. (2019), "Diagnosing sample ratio mismatch in online controlled
  experiments", KDD '19), flagged at p < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

ALPHA = 0.05
POWER = 0.8
SRM_ALPHA = 0.001
# The normal approximation needs some leads in each arm before any verdict is given.
MIN_PER_VARIANT = 30
_NORMAL = NormalDist()


def z_of(confidence: float) -> float:
    """The two-sided normal quantile: 0.95 → 1.96."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for a rate (exact at the edges: 0 of n is not "0 ± 0")."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    z = z_of(confidence)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def newcombe(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = 0.95
) -> Interval:
    """Newcombe's interval for rate(b) − rate(a), from the two Wilson intervals."""
    if trials_a <= 0 or trials_b <= 0:
        return Interval(-1.0, 1.0)
    pa, pb = successes_a / trials_a, successes_b / trials_b
    a, b = wilson(successes_a, trials_a, confidence), wilson(successes_b, trials_b, confidence)
    diff = pb - pa
    low = diff - math.sqrt((pb - b.low) ** 2 + (a.high - pa) ** 2)
    high = diff + math.sqrt((b.high - pb) ** 2 + (pa - a.low) ** 2)
    return Interval(max(-1.0, low), min(1.0, high))


# -- the always-valid sequential test (mSPRT) -------------------------------------------


def _variance(successes: int, trials: int) -> float:
    """The variance of a rate's estimate, with Laplace's (k+1)/(n+2) so that 0 of n still
    has some (no infinite evidence from a handful of leads)."""
    p = (successes + 1) / (trials + 2)
    return p * (1 - p) / trials


def msprt_statistic(diff: float, variance: float, tau2: float) -> float:
    """The mixture likelihood ratio Λ of "difference = 0" against a N(0, τ²) mixture of
    differences, for an estimate `diff` with variance `variance` (Johari et al. 2017, eq. 11):
    Λ = sqrt(V / (V + τ²)) · exp(τ² · diff² / (2 V (V + τ²))). Rejecting once Λ ≥ 1/α keeps
    the chance of ever rejecting a true null below α, however often it is looked at."""
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + (
        tau2 * diff * diff / (2 * variance * (variance + tau2))
    )
    return math.exp(min(log_lr, 700.0))


def msprt_half_width(variance: float, tau2: float, alpha: float = ALPHA) -> float:
    """The half-width of the always-valid interval {θ : Λ(θ) < 1/α} around the estimate:
    sqrt(V (V + τ²) / τ² · (log((V + τ²) / V) + 2 log(1/α)))."""
    return math.sqrt(
        variance * (variance + tau2) / tau2 * (math.log((variance + tau2) / variance)
                                               + 2 * math.log(1 / alpha))
    )  # fmt: skip


Verdict = Literal["better", "worse", "same", "open"]


@dataclass(frozen=True)
class Comparison:
    """A variant against the control on one rate, by the sequential test."""

    diff: float  # rate(variant) − rate(control)
    interval: Interval  # always valid
    p_value: float  # always valid: 1/Λ, capped at 1
    verdict: Verdict


def compare(
    control: tuple[int, int],
    variant: tuple[int, int],
    *,
    min_effect: float,
    alpha: float = ALPHA,
    min_per_variant: int = MIN_PER_VARIANT,
) -> Comparison:
    """`control` and `variant` are (conversions, exposed). The verdict is "better"/"worse" when
    the always-valid interval of the difference leaves 0, "same" when it lies within
    ±min_effect, "open" otherwise (or while an arm has fewer than `min_per_variant` leads).
    τ = min_effect: the mixture puts its weight on effects of the size the test is for."""
    (kc, nc), (kv, nv) = control, variant
    if nc <= 0 or nv <= 0:
        return Comparison(0.0, Interval(-1.0, 1.0), 1.0, "open")
    diff = kv / nv - kc / nc
    variance = _variance(kc, nc) + _variance(kv, nv)
    tau2 = min_effect * min_effect
    half = msprt_half_width(variance, tau2, alpha)
    interval = Interval(max(-1.0, diff - half), min(1.0, diff + half))
    p_value = min(1.0, 1.0 / msprt_statistic(diff, variance, tau2))
    verdict: Verdict = "open"
    if min(nc, nv) >= min_per_variant:
        if interval.low > 0:
            verdict = "better"
        elif interval.high < 0:
            verdict = "worse"
        elif -min_effect < interval.low and interval.high < min_effect:
            verdict = "same"
    return Comparison(diff, interval, p_value, verdict)


def leads_needed(
    base_rate: float,
    min_effect: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    variants: int = 2,
) -> int:
    """Leads per variant at which the sequential test finds a difference of `min_effect` with
    the chance `power` (a true difference δ is found once δ − half-width ≥ z_power · sd).
    The α is shared by the comparisons with the control (Bonferroni), as in the report."""
    p = min(max(base_rate, 0.01), 0.99)
    q = p + min_effect if p + min_effect < 1 else p - min_effect
    per_lead = p * (1 - p) + q * (1 - q)
    level = alpha / max(1, variants - 1)
    z_power = _NORMAL.inv_cdf(power)
    tau2 = min_effect * min_effect

    def enough(n: int) -> bool:
        variance = per_lead / n
        return min_effect - msprt_half_width(variance, tau2, level) >= z_power * math.sqrt(
            variance
        )

    high = max(MIN_PER_VARIANT, 2)
    while not enough(high):
        high *= 2
        if high > 10**9:
            return high
    low = high // 2
    while low + 1 < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return max(high, MIN_PER_VARIANT)


# -- sample-ratio mismatch --------------------------------------------------------------


def chi_square_sf(statistic: float, degrees: int) -> float:
    """P(χ²(degrees) ≥ statistic): the regularized upper incomplete gamma Q(k/2, x/2)."""
    if statistic <= 0:
        return 1.0
    return _gamma_q(degrees / 2, statistic / 2)


def _gamma_q(a: float, x: float) -> float:
    """Q(a, x) by its series below a + 1 and its continued fraction above (Numerical Recipes,
    §6.2)."""
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


@dataclass(frozen=True)
class SampleRatio:
    p_value: float
    mismatch: bool


def sample_ratio(observed: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Whether the exposures drifted from the weights more than chance allows (p < 0.001):
    a broken split (a variant that fails to render, a filter on one arm) makes every other
    number of the test untrustworthy."""
    total = sum(observed)
    weight = sum(weights)
    if total == 0 or weight <= 0 or len(observed) < 2:
        return SampleRatio(1.0, False)
    statistic = 0.0
    for seen, w in zip(observed, weights, strict=True):
        expected = total * w / weight
        statistic += (seen - expected) ** 2 / expected
    p_value = chi_square_sf(statistic, len(observed) - 1)
    return SampleRatio(p_value, p_value < SRM_ALPHA)
