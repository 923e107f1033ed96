"""``python -m analysis.report``: the program is `analysis.report.pipeline.main`."""

from .pipeline import main

raise SystemExit(main())
