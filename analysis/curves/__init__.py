"""Scaling-law fits: pure functions on arrays, no I/O.

Three estimators, each with a bootstrap over *runs* (not points: a run's eval points share its
training noise) and goodness-of-fit diagnostics:

* ``fit_frontier``   L(C) = E + A * C**-alpha on the compute frontier of one family (per-budget minima,
                     or the lower envelope of dense points); E = 0 fallback when E is not identified;
* ``fit_isoflop``    Chinchilla approach 2: per budget a parabola in log N, then N*(C), D*(C) power laws;
* ``fit_parametric`` Chinchilla approach 3: L(N, D) = E + A/N**alpha + B/D**beta;
* ``fit_phi``        that law with N_eff = N (1 + phi (E[S] - 1)) for the looped runs: the effective-parameter ratio.

Fitting choices and why (after Hoffmann et al. 2022, Besiroglu et al. 2024 "Chinchilla scaling: a
replication attempt", Porian et al. 2024 "Resolving discrepancies in compute-optimal scaling"):

* The loss is modelled in log space with log-sum-exp terms, ``log L = LSE(a - alpha log N, b - beta log D, e)``,
  so every term stays positive without constraints and relative errors are weighted alike at every scale.
* Huber loss with delta = 1e-3 on log-loss residuals: points that miss by more than ~0.1 % (diverged
  runs, a bad eval) pull linearly instead of quadratically.
* L-BFGS-B from a grid of starts with tight tolerances; the replication paper showed that the published
  Chinchilla fit had stopped early, so we report the optimiser status, the gradient norm at the solution
  and how many starts agree with the best one.
* Internally log N, log D, log C are centred on a reference scale (x - x0). This is only a
  reparameterisation (a = a' + alpha x0), but it removes the strong a/alpha correlation that makes raw-unit
  fits ill-conditioned; parameters are reported in raw units.
* Bootstrap: resampling runs with replacement is the same as refitting with multinomial integer weights,
  so all replicates are fitted *together* with a batched, damped Gauss-Newton (IRLS for Huber) solver,
  warm-started at the point fit. No per-replicate grid search: the point fit already located the basin.
"""

from .backtests import Backtest, backtest_frontier, backtest_parametric
from .core import DELTA, OUTLIER_K, FitDiagnostics, Interval, budget_keys, fit_status, huber, mad_outliers, mc_weights
from .frontier import FRONTIER_SELECT, FrontierFit, budget_minima, fit_frontier, lower_envelope
from .isoflop import IsoFlopBudget, IsoFlopFit, PowerLaw, fit_frontier_isoflop, fit_isoflop, fit_power_law
from .multiplier import MultiplierCurve, efficiency_multiplier
from .parametric import ParametricFit, fit_parametric
from .phi import PhiFit, PhiModel, fit_phi

__all__ = [n for n in dir() if not n.startswith("_") and n not in ("backtests", "core", "frontier", "isoflop",
                                                                   "multiplier", "parametric", "phi")]
