"""Tables -> numbers -> figures -> report for the LoopMDM study.

Modules: ``collect`` (run dirs -> tidy table, ``python -m analysis.collect``), ``select`` (which rows
each analysis may use), ``paired`` (paired errors over the shared eval sequences), ``fits``
(scaling-law math, pure), ``studyfits`` (every fit a study needs), ``claims`` (paper claims ->
verdicts), ``figures``, ``report`` (``python -m analysis.report``), ``fit`` (``python -m analysis.fit``:
refit any CSV), ``synthetic`` (studies drawn from known laws, for tests and benchmarks).
"""
