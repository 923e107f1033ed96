"""Tables -> numbers -> figures -> report for the LoopMDM study. Runs are read only through `records`.

Modules: ``collect`` (run dirs -> tidy table, ``python -m analysis.collect``), ``select`` (which rows
each analysis may use), ``paired`` (paired errors over the shared eval sequences), ``curves``
(scaling-law math, pure: frontier, parametric, IsoFLOP, multiplier, backtests), ``study_fits`` (every
fit a study needs), ``claims`` (paper claims -> verdicts, one module per group of claims), ``figures``, ``report`` (``python -m analysis.report``), ``fit`` (``python -m analysis.fit``:
refit any CSV), ``synthetic`` (studies drawn from known laws, for tests and benchmarks).
"""
