"""``python -m analysis.report STUDY_DIR``: collect -> fit -> claims -> figures -> the fits file and report.md
(`pipeline`), written as markdown by `markdown` (claims) and `sections` (fits, loops, attention, tasks)."""

from .pipeline import ReportResult, main, run_report

__all__ = ["ReportResult", "main", "run_report"]
