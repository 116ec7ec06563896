"""Fisher's exact test on a 2x2 table, one-sided: does the failure go with the setting?

Pure and hand-written (the project does not depend on scipy). The table, over the
jobs analysed::

                  failed   not failed
    with it         a          b
    without it      c          d

Under the null hypothesis (the setting has nothing to do with the failure) the
number of failures among the ``a + b`` jobs with the setting is hypergeometric. The
one-sided p-value is P(X >= a). The score is ``-log10(p)``: 2 means p = 0.01. Terms
are summed from the observed value outwards, in log space, so tables of 100,000
jobs neither overflow nor underflow (the score stays finite up to about 10^300).
"""

from __future__ import annotations

import math

# Stop summing a tail once a term adds less than this, relative to the sum so far.
_EPSILON = 1e-17


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater_log10(a: int, b: int, c: int, d: int) -> float:
    """log10 of the one-sided p-value P(X >= a); 0.0 when the table shows nothing."""
    if min(a, b, c, d) < 0:
        raise ValueError(f"negative count in table {(a, b, c, d)}")
    n_total = a + b + c + d
    failed = a + c
    with_it = a + b
    low = max(0, with_it + failed - n_total)
    high = min(with_it, failed)
    if a <= low:
        return 0.0  # P(X >= the smallest possible value) = 1

    def log_pmf(x: int) -> float:
        return (
            _log_choose(failed, x)
            + _log_choose(n_total - failed, with_it - x)
            - _log_choose(n_total, with_it)
        )

    mode = (with_it + 1) * (failed + 1) // (n_total + 2)
    if a > mode:
        # Upper tail: terms fall from x = a upwards.
        total, term, x = 1.0, 1.0, a
        while x < high:
            term *= (with_it - x) * (failed - x) / ((x + 1) * (n_total - failed - with_it + x + 1))
            total += term
            x += 1
            if term < _EPSILON * total:
                break
        return (log_pmf(a) + math.log(total)) / math.log(10)
    # a is at or below the mode: P(X >= a) = 1 - P(X <= a - 1), and the lower tail
    # falls from x = a - 1 downwards.
    total, term, x = 1.0, 1.0, a - 1
    while x > low:
        term *= x * (n_total - failed - with_it + x) / ((with_it - x + 1) * (failed - x + 1))
        total += term
        x -= 1
        if term < _EPSILON * total:
            break
    lower = math.exp(log_pmf(a - 1) + math.log(total))
    # a <= mode, so P(X >= a) >= P(X = mode): 1 - lower is far from 0.
    return math.log10(max(1.0 - lower, 1e-300))


def fisher_score(a: int, b: int, c: int, d: int) -> float:
    """``-log10`` of the one-sided Fisher p-value: higher means more suspicious."""
    return -fisher_greater_log10(a, b, c, d) + 0.0  # + 0.0 turns -0.0 into 0.0
