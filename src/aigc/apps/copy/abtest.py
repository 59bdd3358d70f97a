"""A/B statistics for copy variants: which variant to show next, and how a variant compares with
the control. Pure functions over ``(shown, successes)`` counts (numpy and the standard library
only); the events themselves are stored and counted by :mod:`aigc.apps.copy.experiments`.

- :func:`thompson_pick`: Thompson sampling. Each variant's success rate has the posterior
  Beta(1 + successes, 1 + shown - successes) (a uniform prior); one draw per variant, the highest
  wins. A variant never shown draws from the uniform prior, so it gets tried.
- :func:`lift`: the rates, the absolute and relative lift of a variant over the control, a
  confidence interval for the absolute lift by **Newcombe's hybrid score method** (method 10 of
  Newcombe 1998: the two Wilson score intervals combined), which keeps close to its nominal coverage
  at small counts and rates near 0 or 1 where the Wald interval does not, and the probability that
  the variant's rate beats the control's under the two Beta posteriors, computed **exactly**
  (the closed-form sum for integer Beta parameters), so it needs no random draws.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

from aigc.errors import InvalidInput


def _counts(pair: Any, what: str) -> tuple[int, int]:
    """``(shown, successes)`` as two ints, checked: 0 <= successes <= shown."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise InvalidInput(f"{what} must be a pair (shown, successes), got {pair!r}")
    shown, succ = pair
    for name, v in (("shown", shown), ("successes", succ)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InvalidInput(f"{what}: {name} must be a count (an integer >= 0), got {v!r}")
    if succ > shown:
        raise InvalidInput(f"{what}: {succ} successes out of {shown} shown; successes cannot exceed the "
                           "times shown (record a 'shown' event for every view)")
    return int(shown), int(succ)


def thompson_pick(stats: Mapping[Hashable, tuple[int, int]], rng: np.random.Generator) -> Hashable:
    """The variant to show next: one draw from each Beta(1 + s, 1 + shown - s), the highest wins
    (ties to the first in ``stats``' order)."""
    if not isinstance(stats, Mapping) or not stats:
        raise InvalidInput("thompson_pick needs at least one variant: {variant: (shown, successes)}")
    if not isinstance(rng, np.random.Generator):
        raise InvalidInput(f"rng must be a numpy Generator (np.random.default_rng(seed)), "
                           f"got {type(rng).__name__}")
    names = list(stats)
    counts = np.array([_counts(stats[v], f"variant {v!r}") for v in names], dtype=np.float64)  # (V, 2)
    draws = rng.beta(1.0 + counts[:, 1], 1.0 + counts[:, 0] - counts[:, 1])  # (V,)
    return names[int(np.argmax(draws))]


def wilson(shown: int, successes: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of ``successes / shown`` at normal quantile ``z``."""
    p = successes / shown
    denom = 1.0 + z * z / shown
    centre = (p + z * z / (2 * shown)) / denom
    half = z * math.sqrt(p * (1 - p) / shown + z * z / (4 * shown * shown)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def prob_beats(control: tuple[int, int], variant: tuple[int, int]) -> float:
    """P(rate_variant > rate_control) for the posteriors Beta(1 + s, 1 + shown - s), exactly:

    sum_{i=0}^{a_v-1} B(a_c + i, b_c + b_v) / ((b_v + i) B(1 + i, b_v) B(a_c, b_c))

    (integer Beta parameters; each term in log space, summed with numpy)."""
    if variant[1] > control[1]:  # the sum runs over the variant's successes: take the shorter side
        return 1.0 - prob_beats(variant, control)  # ties have probability 0 under continuous posteriors
    a_c, b_c = 1 + control[1], 1 + control[0] - control[1]
    a_v, b_v = 1 + variant[1], 1 + variant[0] - variant[1]
    n = a_v
    i = np.arange(n, dtype=np.float64)

    def lgamma_run(x: float) -> np.ndarray:  # lgamma(x + i), i = 0..n-1: lgamma(y + 1) = lgamma(y) + log(y)
        return math.lgamma(x) + np.concatenate(([0.0], np.cumsum(np.log(x + i[:-1]))))

    log_b1 = lgamma_run(a_c) + math.lgamma(b_c + b_v) - lgamma_run(a_c + b_c + b_v)  # log B(a_c+i, b_c+b_v)
    log_b2 = lgamma_run(1.0) + math.lgamma(b_v) - lgamma_run(1.0 + b_v)  # log B(1 + i, b_v)
    log_b3 = math.lgamma(a_c) + math.lgamma(b_c) - math.lgamma(a_c + b_c)  # log B(a_c, b_c)
    terms = log_b1 - np.log(b_v + i) - log_b2 - log_b3
    return float(min(1.0, max(0.0, np.exp(terms).sum())))


def lift(control: tuple[int, int], variant: tuple[int, int], confidence: float = 0.95) -> dict[str, Any]:
    """How ``variant`` (shown, successes) compares with ``control`` (shown, successes).

    ``absolute_lift`` = rate_v - rate_c with its ``ci`` (Newcombe's hybrid score interval);
    ``relative_lift`` = absolute / rate_c (None when the control has no success) with ``relative_ci``
    = the absolute interval over rate_c (the control rate taken as known: an approximation);
    ``p_variant_better``: P(rate_v > rate_c) under the Beta(1 + s, 1 + n - s) posteriors, exact."""
    c = _counts(control, "control")
    v = _counts(variant, "variant")
    for name, (shown, _) in (("control", c), ("variant", v)):
        if shown == 0:
            raise InvalidInput(f"{name} was shown 0 times: a rate needs at least one view (record 'shown' "
                               "events before asking for the lift)")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise InvalidInput(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p_c, p_v = c[1] / c[0], v[1] / v[0]
    l_c, u_c = wilson(*c, z)
    l_v, u_v = wilson(*v, z)
    diff = p_v - p_c
    lo = diff - math.sqrt((p_v - l_v) ** 2 + (u_c - p_c) ** 2)
    hi = diff + math.sqrt((u_v - p_v) ** 2 + (p_c - l_c) ** 2)
    relative = diff / p_c if p_c > 0 else None
    return {
        "control": {"shown": c[0], "successes": c[1], "rate": p_c},
        "variant": {"shown": v[0], "successes": v[1], "rate": p_v},
        "absolute_lift": diff,
        "relative_lift": relative,
        "confidence": float(confidence),
        "ci": [lo, hi],
        "ci_method": "newcombe-hybrid-score",
        "relative_ci": [lo / p_c, hi / p_c] if p_c > 0 else None,
        "p_variant_better": prob_beats(c, v),
        "p_method": "exact-beta",
    }
