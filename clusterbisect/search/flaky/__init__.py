"""Flake-aware culprit search: a posterior over the culprit, an information-gain probe
choice, a confidence to stop at, and repeated runs to confirm.

The oracle is asymmetric: a probe that contains a culprit fails with the reproduction
rate ``p``; a probe without one fails with the background rate ``q`` (usually 0).

**Nested probes.** The search never probes arbitrary subsets. It fixes an order of
the changes ``U`` and probes prefixes ``F | U[:c]`` (``F`` is a forced set, empty at
first). Prefixes are nested, so *whatever* the culprits are (one change, an
interaction that needs several together, several independent ones), the prefixes fail
with rate ``p`` from some cut ``T`` on and with rate ``q`` before it. The hypotheses
are that threshold:

* position ``i`` in ``1..N``: ``U[:i]`` is the first failing prefix, so ``U[i-1]`` is
  the last change (in the order) that some culprit needs;
* position ``0``: ``F`` alone already fails (for the first search: the good spec itself
  fails, which is ``baseline_failed``);
* position ``N+1``: no prefix fails beyond the background rate; for the first search
  that is the explicit "no culprit: the failure is a flake" hypothesis.

Once ``U[i-1]`` is known, it is forced on and the same search runs on ``U[:i-1]``; it
ends at position 0 when the forced set fails alone. A single culprit costs one extra
check (the culprit alone fails); an AND-set of k changes costs k searches. Each later
search is seeded with every run already seen for its prefixes.

**Probe choice.** With point estimates of p and q, a probe's expected information gain
depends only on the posterior mass ``m`` of the positions it contains, and is concave
in ``m``: the best single probe is the cut whose mass is nearest the closed-form
optimum. (This is the "greedy prefix of the posterior" trick; on nested prefixes the
posterior mass is a cumulative sum, so choosing a cut is a binary search.) A batch of
K probes is chosen greedily by the joint information gain of the batch, computed
exactly over its outcomes; a cut may be chosen twice (two runs of the same probe).

**The leader's clean probe.** Besides prefixes, a search may run the *clean probe* of
its leading position ``i``: every change but ``U[i-1]``. Under any other position it
contains what fails (it holds the prefix that fails, or the culprit), so it fails at
``p``; under ``i`` it fails only at ``q``, unless the rest holds a second culprit
(prior ``DIRTY``; that reading keeps rate ``p``). One run thus weighs the leader against
every other position at once, where a prefix only splits neighbours; with p = 0.5 the
last stretch of a search (is it ``i`` or ``i - 1``?) costs about as many runs as the
clean check that follows anyway, and now those runs count. The same subset is the
clean check of the culprit ``{U[i-1]}``, so its runs are reused there. Each run of a
batch goes to a cut or to the clean probe by information gain.

**Unknown p and q.** Without given values, p and q are integrated out per hypothesis
(exact Bayesian averaging, not plugged-in estimates), so repeated baselines
(``baseline_runs``) and every probe sharpen them. p has a Beta prior. q has a mixture
prior: mass ``Q_ZERO`` on q = 0 exactly (a working spec often never fails), the rest a
Beta. While no run without the culprit has failed, a single failure of a probe is
nearly decisive against the positions outside it, as with a given q = 0; the first
such failure rules q = 0 out for that hypothesis, which then falls back on the Beta (a
Beta-binomial marginal likelihood). The mixture's masses are carried to the search for
a further culprit (:meth:`Line.learned_points`), but not to the search for what a
found change needs: that one decides "alone or with a partner" on few runs.

**Confirmation.** When the search for a culprit has reached ``confidence``, the bad
spec without the culprits found so far is run until it is clean: with no failure in
``ceil(log(1 - C) / log(1 - p))`` runs (:func:`clean_runs_needed`; averaged over p's
posterior when p is learned, :meth:`Line.clean_runs`); with failures, a
likelihood-ratio test between rates p and q decides. If it is not clean, the search
goes on to the next culprit on the remaining changes.

The strategy is pure: no I/O and no randomness, so a replayed journal reaches the
same point.
"""

from clusterbisect.search.flaky.posterior import Line, clean_runs_needed
from clusterbisect.search.flaky.strategy import FlakyStrategy

__all__ = ["FlakyStrategy", "Line", "clean_runs_needed"]
