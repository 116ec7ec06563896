"""The posterior of the flake-aware search: hypotheses over nested prefixes, their
likelihoods under rates p and q (given or integrated out), and information gain.

See the package docstring for the model. Pure: no I/O and no randomness.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product

from clusterbisect.search.base import (
    Subset,
)
from clusterbisect.search.priors import position_masses

# Given rates are kept away from 0 and 1 so that a model that is slightly wrong
# (a background failure when q was said to be 0) cannot make every hypothesis impossible.
RATE_FLOOR = 1e-4


# Beta priors when p and q are learned: p leans high (a reproducible failure), q low.
P_PRIOR = (3.0, 1.0)


Q_PRIOR = (1.0, 19.0)


# Prior masses of the exact rates p = 1 (a deterministic failure) and q = 0 (no
# background failures); the rest of each prior is the Beta above. Measured
# (benchmarks/README.md, "Flaky bisection"): with the clean probe, 0.6 on q = 0 brings
# p = 0.5, q = 0, n = 1,000 from about 64 runs to about 56 and keeps every
# single-culprit cell at q = 0.05 at 0.99 or above; mass on p = 1 cost accuracy at
# q = 0.05 and saved ~2 runs at p = 1, so it stays 0.
P_ONE = 0.0


Q_ZERO = 0.6


# Prior masses of the special positions (see the module docstring).
FIRST_GOOD_FAILS = 0.01  # the good spec itself fails


FIRST_FLAKE = 0.10  # no culprit: the bad spec's failure was background noise


SUB_ALONE = 0.65  # the forced changes fail alone (a single-change culprit)


SUB_NONE = 0.01  # the forced prefix does not fail after all (an earlier search erred)


# Prior probability that the rest holds another culprit, when the leader's clean probe
# (every change but the leader) is weighed as evidence for the leader.
DIRTY = 0.1


# Target masses tried when choosing a batch of several probes.
_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def clean_runs_needed(p: float, confidence: float) -> int:
    """Runs without a failure needed to call a set clean: ceil(log(1 - C) / log(1 - p)).

    If the set held a culprit, each run would fail with rate ``p``, so ``r`` clean runs
    happen by chance with probability ``(1 - p) ** r``; this is the smallest ``r`` that
    makes that at most ``1 - confidence``.
    """
    p = min(max(p, RATE_FLOOR), 1.0 - RATE_FLOOR)
    confidence = min(max(confidence, 0.0), 1.0 - 1e-12)
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - p) - 1e-9))


def _h(x: float) -> float:
    """Binary entropy in bits."""
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -(x * math.log2(x) + (1.0 - x) * math.log2(1.0 - x))


def _betaln(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def best_mass(p: float, q: float) -> float:
    """The posterior mass a single probe should contain to gain the most information.

    A probe holding mass ``m`` fails with probability ``phi = q + m (p - q)``; the gain
    ``h(phi) - m h(p) - (1 - m) h(q)`` is concave in ``m`` and its maximum has the
    closed form below. For p = 1, q = 0 it is 1/2 (plain bisection).
    """
    if p <= q:
        return 0.5
    slope = (_h(p) - _h(q)) / (p - q)
    phi = 1.0 / (1.0 + 2.0**slope)
    return min(1.0, max(0.0, (phi - q) / (p - q)))


def batch_gain(masses: Sequence[float], counts: Sequence[int], p: float, q: float) -> float:
    """Expected information (bits) from runs of nested probes.

    ``masses[j]`` is the posterior mass between distinct cut ``j-1`` and cut ``j`` (the
    last entry: beyond every cut); ``counts[j]`` is how many runs cut ``j`` gets. A
    position between cuts ``j-1`` and ``j`` is inside every probe with cut ``>= j``.
    Outcomes are counted as fails per cut (sufficient statistics), enumerated exactly.
    """
    cuts = len(counts)
    # Per interval j, the rate of each cut c: p if c >= j, else q.
    rates = [[p if c >= j else q for c in range(cuts)] for j in range(cuts + 1)]
    h_y = 0.0
    h_y_given = 0.0
    for fails in product(*(range(k + 1) for k in counts)):
        total = 0.0
        per: list[float] = []
        for j in range(cuts + 1):
            prob = 1.0
            for c, (k, f) in enumerate(zip(counts, fails, strict=False)):
                r = rates[j][c]
                prob *= math.comb(k, f) * (r**f) * ((1.0 - r) ** (k - f))
            per.append(prob)
            total += masses[j] * prob
        if total > 0.0:
            h_y -= total * math.log2(total)
        for j, prob in enumerate(per):
            if prob > 0.0 and masses[j] > 0.0:
                h_y_given -= masses[j] * prob * math.log2(prob)
    return h_y - h_y_given


@dataclass
class _Block:
    start: int  # first position (inclusive)
    end: int  # last position (inclusive)
    weight: float  # posterior mass of each position in the block
    fin: int  # fails of probes that contain these positions
    sin: int  # passes of probes that contain these positions

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def mass(self) -> float:
        """The posterior mass of all its positions."""
        return self.weight * self.size


@dataclass
class Line:
    """One nested search: probes ``forced | order[:c]`` for cuts ``c`` in ``0..N``.

    Positions ``0..N+1`` are the hypotheses described in the module docstring. The
    posterior is kept per block of positions that no cut separates, so an update costs
    O(number of distinct cuts probed), not O(N).
    """

    forced: Subset
    order: tuple[int, ...]
    prior_alone: float
    prior_none: float
    p: float | None = None  # a given reproduction rate, else learned
    q: float | None = None
    p_prior: tuple[float, float] = P_PRIOR
    q_prior: tuple[float, float] = Q_PRIOR
    p_one: float = 0.0  # prior mass of p = 1 exactly (the rest: the Beta p_prior)
    q_zero: float = 0.0  # prior mass of q = 0 exactly (the rest: the Beta q_prior)
    dirty: float = DIRTY  # prior that the rest holds another culprit (clean probes)
    # Priors: a weight per change (by index); positions then get unequal prior masses.
    weights: Sequence[float] | None = None
    counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # cut -> (fails, passes)
    cleans: dict[int, tuple[int, int]] = field(default_factory=dict)  # position -> (f, p)
    tried: set[int] = field(default_factory=set)  # cuts requested, whatever came back
    blocks: list[_Block] = field(default_factory=list)
    _cum: list[float] = field(default_factory=list)
    _pos: dict[int, int] = field(default_factory=dict)
    _clean_share: dict[int, float] = field(default_factory=dict)
    _masses: list[float] = field(default_factory=list)  # prior of each position 1..N
    _steps: set[int] = field(default_factory=set)  # positions after which the prior changes

    def __post_init__(self) -> None:
        self._pos = {change: i for i, change in enumerate(self.order)}
        self._masses = position_masses(self.order, self.weights) if self.weights else []
        # Blocks hold positions of equal prior: the prior's steps are block bounds too
        # (few, since the order puts equal weights together).
        self._steps = {
            i for i in range(1, len(self._masses)) if self._masses[i - 1] != self._masses[i]
        }
        self.update()

    @property
    def n(self) -> int:
        return len(self.order)

    def subset(self, cut: int) -> Subset:
        """The probe for ``cut``: the forced set plus the first ``cut`` changes."""
        return self.forced | frozenset(self.order[:cut])

    def cut_of(self, subset: Subset) -> int | None:
        """The cut whose probe is ``subset``, or None if it is not one of this line's."""
        cut = len(subset) - len(self.forced)
        if cut < 0 or cut > self.n or not self.forced <= subset:
            return None
        for change in subset - self.forced:
            pos = self._pos.get(change)
            if pos is None or pos >= cut:
                return None
        return cut

    def clean_subset(self, pos: int) -> Subset:
        """The clean probe of position ``pos``: every change of the line but ``U[pos-1]``."""
        return self.forced | frozenset(self.order[: pos - 1] + self.order[pos:])

    def clean_of(self, subset: Subset) -> int | None:
        """The position whose clean probe is ``subset`` (positions 1..N-1), or None.

        Position N's clean probe is the prefix N-1, which is a cut, not a clean probe.
        """
        if len(subset) != len(self.forced) + self.n - 1 or not self.forced <= subset:
            return None
        missing = [c for c in self.order if c not in subset]
        if len(missing) != 1 or len(subset - self.forced) != self.n - 1:
            return None
        pos = self._pos[missing[0]] + 1
        return pos if pos < self.n else None

    def observe_clean(self, pos: int, fails: int, passes: int) -> None:
        """Set the (cumulative) outcome counts of the clean probe of ``pos``."""
        if fails or passes:
            self.cleans[pos] = (fails, passes)

    def observe(self, cut: int, fails: int, passes: int) -> None:
        """Set the (cumulative) outcome counts of ``cut``; call :meth:`update` after."""
        if fails or passes:
            self.counts[cut] = (fails, passes)

    # --- the posterior ------------------------------------------------------------

    def _rate_loglik(self, hit: int, miss: int, beta: tuple[float, float], point: float) -> float:
        """Log marginal likelihood of ``hit`` events in ``hit + miss`` runs at a learned rate.

        The rate's prior is a mixture: mass ``point`` on the rate at which ``miss`` is
        impossible (p = 1 for runs with a culprit, q = 0 for runs without), the rest a
        Beta. The Beta part is the Beta-binomial marginal of the given order of runs.
        """
        tail = _betaln(beta[0] + hit, beta[1] + miss) - _betaln(*beta)
        if point <= 0.0:
            return tail
        if miss:
            return math.log1p(-point) + tail
        return math.log(point + (1.0 - point) * math.exp(tail))

    def _tail_share(self, hit: int, miss: int, beta: tuple[float, float], point: float) -> float:
        """Posterior probability that the rate is from the Beta part, not the point mass."""
        if point <= 0.0 or miss:
            return 1.0
        tail = (1.0 - point) * math.exp(_betaln(beta[0] + hit, beta[1] + miss) - _betaln(*beta))
        return tail / (point + tail)

    def _loglik(self, fin: int, sin: int, fout: int, sout: int) -> float:
        if self.p is not None:
            ll = fin * math.log(self.p) + sin * math.log1p(-self.p)
        else:
            ll = self._rate_loglik(fin, sin, self.p_prior, self.p_one)
        if self.q is not None:
            ll += fout * math.log(self.q) + sout * math.log1p(-self.q)
        else:
            # For q the "impossible" event is a fail: swap the roles of fails and passes.
            a, b = self.q_prior
            ll += self._rate_loglik(sout, fout, (b, a), self.q_zero)
        return ll

    def update(self) -> None:
        """Recompute the posterior over positions from the counts."""
        n = self.n
        special = set(self.cleans)
        bounds = sorted(
            set(self.counts) | {0, n} | special | {pos - 1 for pos in special} | self._steps
        )
        # Suffix sums: the fails and passes of every cut >= bound.
        suffix: dict[int, tuple[int, int]] = {}
        f_acc = s_acc = 0
        for b in reversed(bounds):
            f, s = self.counts.get(b, (0, 0))
            f_acc, s_acc = f_acc + f, s_acc + s
            suffix[b] = (f_acc, s_acc)
        # Clean probes contain the culprit under every position but their own (and the
        # flake): there they are "outside", unless the rest holds another culprit.
        f_clean = sum(f for f, _s in self.cleans.values())
        s_clean = sum(s for _f, s in self.cleans.values())
        f_pre, s_pre = suffix[0]
        f_all, s_all = f_pre + f_clean, s_pre + s_clean
        spans: list[tuple[int, int, float, int, int]] = []
        # Position 0: inside every probe.
        spans.append((0, 0, self.prior_alone, f_all, s_all))
        middle = max(0.0, 1.0 - self.prior_alone - self.prior_none)
        previous = 0
        for b in bounds[1:]:
            fin, sin = suffix[b]  # positions previous+1..b are inside cuts >= b
            # The prior of each position of the span (equal without priors).
            prior = middle * self._masses[previous] if self._masses else middle / n if n else 0.0
            spans.append((previous + 1, b, prior, fin + f_clean, sin + s_clean))
            previous = b
        spans.append((n + 1, n + 1, self.prior_none, 0, 0))  # inside no probe
        logs: list[float] = []
        self._clean_share = {}
        for i, (start, _end, prior, fin, sin) in enumerate(spans):
            if prior <= 0.0:
                logs.append(-math.inf)
                continue
            inside = self._loglik(fin, sin, f_all - fin, s_all - sin)
            own = self.cleans.get(start) if 0 < start <= n else None
            if own is None:
                logs.append(math.log(prior) + inside)
                continue
            # Its own clean probe: outside if the rest is clean, inside if it is not.
            fin, sin = fin - own[0], sin - own[1]
            outside = self._loglik(fin, sin, f_all - fin, s_all - sin)
            ll_clean = math.log1p(-self.dirty) + outside
            ll_dirty = math.log(self.dirty) + inside
            ll_top = max(ll_clean, ll_dirty)
            both = ll_top + math.log(math.exp(ll_clean - ll_top) + math.exp(ll_dirty - ll_top))
            share = math.exp(ll_clean - both)
            self._clean_share[start] = share
            if share >= 0.5:  # the estimates of p and q follow the likelier reading
                spans[i] = (start, _end, prior, fin, sin)
            logs.append(math.log(prior) + both)
        top = max(logs)
        raw = [math.exp(x - top) if x > -math.inf else 0.0 for x in logs]
        total = sum(w * (e - s + 1) for w, (s, e, *_r) in zip(raw, spans, strict=False))
        self.blocks = [
            _Block(s, e, w / total, fin, sin)
            for w, (s, e, _p, fin, sin) in zip(raw, spans, strict=False)
        ]
        cum, acc = [], 0.0
        for block in self.blocks:
            acc += block.mass
            cum.append(acc)
        self._cum = cum

    def top(self) -> tuple[int, float]:
        """The most probable position and its posterior (ties: the smallest position)."""
        best = max(self.blocks, key=lambda b: (b.weight, -b.start))
        return best.start, best.weight

    def ranked(self, limit: int = 10) -> list[tuple[int, float]]:
        """Positions by posterior, highest first."""
        out: list[tuple[int, float]] = []
        for block in sorted(self.blocks, key=lambda b: (-b.weight, b.start)):
            for pos in range(block.start, block.end + 1):
                out.append((pos, block.weight))
                if len(out) >= limit:
                    return out
        return out

    def mass_upto(self, cut: int) -> float:
        """Posterior mass of positions ``0..cut`` (the positions the probe contains)."""
        i = bisect_left([b.end for b in self.blocks], cut)
        block = self.blocks[i]
        before = self._cum[i - 1] if i else 0.0
        return before + block.weight * (cut - block.start + 1)

    def snap(self, mass: float) -> set[int]:
        """The cuts whose contained mass is nearest ``mass`` from below and above."""
        i = min(bisect_left(self._cum, mass), len(self.blocks) - 1)
        block = self.blocks[i]
        before = self._cum[i - 1] if i else 0.0
        if block.weight > 0.0:
            k = (mass - before) / block.weight
            lo = block.start + math.floor(k) - 1
            hi = block.start + math.ceil(k) - 1
        else:
            lo, hi = block.start - 1, block.end
        return {min(max(c, 0), self.n) for c in (lo, hi, lo + 1)}

    def estimates(self) -> tuple[float, float]:
        """Point estimates of (p, q): given values, else posterior means."""
        if self.p is not None and self.q is not None:
            return self.p, self.q
        a_p, b_p = self.p_prior
        a_q, b_q = self.q_prior
        f_all, s_all = self.blocks[0].fin, self.blocks[0].sin
        p_num = p_den = q_num = 0.0
        for block in self.blocks:
            mass = block.mass
            fout, sout = f_all - block.fin, s_all - block.sin
            tail = self._tail_share(sout, fout, (b_q, a_q), self.q_zero)
            q_num += mass * tail * (a_q + fout) / (a_q + b_q + fout + sout)
            if block.start <= self.n:  # hypotheses with a culprit
                tail = self._tail_share(block.fin, block.sin, self.p_prior, self.p_one)
                beta_mean = (a_p + block.fin) / (a_p + b_p + block.fin + block.sin)
                p_den += mass
                p_num += mass * ((1.0 - tail) + tail * beta_mean)
        p_hat = self.p if self.p is not None else (p_num / p_den if p_den else a_p / (a_p + b_p))
        q_hat = self.q if self.q is not None else q_num
        return p_hat, q_hat

    def learned_priors(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Beta priors for a following search: these priors plus the expected counts."""
        a_p, b_p = self.p_prior
        a_q, b_q = self.q_prior
        f_all, s_all = self.blocks[0].fin, self.blocks[0].sin
        ef_in = es_in = ef_out = es_out = 0.0
        for block in self.blocks:
            mass = block.mass
            ef_in += mass * block.fin
            es_in += mass * block.sin
            ef_out += mass * (f_all - block.fin)
            es_out += mass * (s_all - block.sin)
        return (a_p + ef_in, b_p + es_in), (a_q + ef_out, b_q + es_out)

    def learned_points(self) -> tuple[float, float]:
        """Posterior masses of p = 1 and q = 0 for a following search."""
        a_q, b_q = self.q_prior
        f_all, s_all = self.blocks[0].fin, self.blocks[0].sin
        p_one = q_zero = p_den = 0.0
        for block in self.blocks:
            mass = block.mass
            fout, sout = f_all - block.fin, s_all - block.sin
            q_zero += mass * (1.0 - self._tail_share(sout, fout, (b_q, a_q), self.q_zero))
            if block.start <= self.n:
                p_den += mass
                p_one += mass * (
                    1.0 - self._tail_share(block.fin, block.sin, self.p_prior, self.p_one)
                )
        return (p_one / p_den if p_den else self.p_one), q_zero

    def clean_runs(self, confidence: float) -> int:
        """Passes needed to call a set clean: :func:`clean_runs_needed` for a given p.

        For a learned p it is the same rule averaged over p's posterior: the fewest
        runs ``r`` with ``E[(1 - p) ** r] <= 1 - confidence`` (for a Beta(a, b) that
        is ``B(a, b + r) / B(a, b)``; the mass on p = 1 adds nothing). Averaging asks
        for more runs than plugging in the mean, as an uncertain p should.
        """
        if self.p is not None:
            return clean_runs_needed(self.p, confidence)
        (a, b), _ = self.learned_priors()
        one, _ = self.learned_points()
        for runs in range(1, 1000):
            chance = (1.0 - one) * math.exp(_betaln(a, b + runs) - _betaln(a, b))
            if chance <= 1.0 - confidence:
                return runs
        return 1000

    def p_cautious(self) -> float:
        """A cautious reproduction rate for clean checks: the given p, else mean - 1 sd.

        An optimistic p would call a set clean after too few runs. The learned p is a
        mixture: p = 1 with the mass :meth:`learned_points` gives it, else the Beta.
        """
        if self.p is not None:
            return self.p
        (a, b), _ = self.learned_priors()
        one, _ = self.learned_points()
        beta_mean = a / (a + b)
        beta_var = a * b / ((a + b) ** 2 * (a + b + 1.0))
        mean = one + (1.0 - one) * beta_mean
        var = one * (1.0 - mean) ** 2 + (1.0 - one) * (beta_var + (beta_mean - mean) ** 2)
        return max(RATE_FLOOR, mean - math.sqrt(var))

    # --- the probe choice -----------------------------------------------------------

    def gain(self, cuts: Sequence[int], p: float, q: float) -> float:
        """Expected information of one run per entry of ``cuts`` (repeats allowed)."""
        distinct = sorted(set(cuts))
        counts = [cuts.count(c) for c in distinct]
        masses, before = [], 0.0
        for c in distinct:
            upto = self.mass_upto(c)
            masses.append(max(0.0, upto - before))
            before = upto
        masses.append(max(0.0, 1.0 - before))
        return batch_gain(masses, counts, p, q)

    def clean_mass(self, pos: int) -> float:
        """Posterior mass of the hypotheses under which ``pos``'s clean probe fails at p."""
        weight = next(b.weight for b in self.blocks if b.start <= pos <= b.end)
        share = self._clean_share.get(pos, 1.0 - self.dirty)
        return max(0.0, 1.0 - weight * share - self.blocks[-1].weight)

    def clean_gain(self, runs: int, p: float, q: float) -> float:
        """Expected information of ``runs`` runs of the leader's clean probe."""
        leader, _ = self.top()
        if runs <= 0 or not 1 <= leader < self.n:
            return 0.0
        inside = self.clean_mass(leader)
        return batch_gain([inside, 1.0 - inside], [runs], p, q)

    def plan(
        self, k: int, skip: Iterable[int] = (), clean_ok: bool = True
    ) -> tuple[list[int], int]:
        """Choose ``k`` runs: cuts (as :meth:`choose`) and runs of the leader's clean probe.

        A run of the leader's clean probe (every change but the leader) weighs the
        leader against every other position at once. Each run goes to whichever gains
        more; the two kinds are treated as independent. ``clean_ok=False`` leaves the
        clean probe out (it keeps coming back unresolved).
        """
        leader, _ = self.top()
        cuts = self.choose(k, skip)
        if not clean_ok or not 1 <= leader < self.n:
            return cuts, 0
        p, q = self.rates()
        chosen: list[int] = []
        clean = 0
        for _ in range(k):
            with_cut = self.gain([*chosen, cuts[len(chosen)]], p, q) - (
                self.gain(chosen, p, q) if chosen else 0.0
            )
            with_clean = self.clean_gain(clean + 1, p, q) - (
                self.clean_gain(clean, p, q) if clean else 0.0
            )
            if with_clean > with_cut:
                clean += 1
            else:
                chosen.append(cuts[len(chosen)])
        return chosen, clean

    def rates(self) -> tuple[float, float]:
        """Point estimates of (p, q) kept inside (0, 1) and with q <= p, for gains."""
        p, q = self.estimates()
        p = min(max(p, RATE_FLOOR), 1.0 - RATE_FLOOR)
        return p, min(max(q, RATE_FLOOR), p)

    def choose(self, k: int, skip: Iterable[int] = ()) -> list[int]:
        """Choose ``k`` probe runs (cuts, possibly repeated) by greedy information gain."""
        p, q = self.rates()
        banned = set(skip)
        targets = [best_mass(p, q)] if k == 1 else [best_mass(p, q), *_GRID]
        pool: set[int] = set()
        for target in targets:
            pool |= self.snap(target)
        top, _ = self.top()
        pool |= {c for c in (top - 1, top) if 0 <= c <= self.n}
        candidates = sorted(pool - banned) or sorted(pool)
        chosen: list[int] = []
        for _ in range(k):
            best = max(candidates, key=lambda c: (self.gain([*chosen, c], p, q), -c))
            chosen.append(best)
        return chosen
