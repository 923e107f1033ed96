"""Tables -> numbers -> figures -> report for the LoopMDM study.

Modules: ``collect`` (run dirs -> tidy table), ``fits`` (scaling-law math, pure),
``claims`` (paper claims -> verdicts), ``figures``, ``report`` (``python -m analysis.report``),
``fit`` (CLI to refit any CSV), ``synthetic`` (studies drawn from known laws, for tests and benchmarks).
"""
