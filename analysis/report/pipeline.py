"""``python -m analysis.report STUDY_DIR``: collect -> fit -> claims -> figures -> the fits file + report.md.

Always writes a report, even for a broken or partial study: what cannot be computed is listed under
"What is missing" rather than raised. Both outputs are written atomically (temp file + rename).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

import records

from .. import loop_diagnostics as LD
from .. import tuning as TU
from ..control import control_for_study
from ..claims import Claim, all_claims, multiplier_disagreements
from ..collect import BASE_COLUMNS, load_attention, load_loop_diagnostics, load_or_collect, load_task_evals
from ..figures import FigureResult, make_figures
from ..figures.control import fig_control_depth
from ..select import CORE_COLUMNS, clean, missing_columns
from ..study_fits import StudyFits, fit_study
from ..util import CONVENTIONS, DefaultsFormatter, dumps, normalise_convention
from .cite import find_control
from .markdown import missing_list, render_markdown


@dataclass
class ReportResult:
    report_path: Path
    fits_path: Path
    claims: list[Claim]
    figures: list[FigureResult]
    missing: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def environment() -> dict[str, str]:
    import matplotlib
    import pyarrow
    import scipy

    return {
        "machine": f"{platform.node()} ({platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs)",
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "pyarrow": pyarrow.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_report(
    study_dir: str | Path, *, n_boot: int = 1000, conventions: Sequence[str] = CONVENTIONS, seed: int = 0,
    figures: bool = True, force_collect: bool = False, loops: int | None = None, weighted: bool = False,
    formats: Sequence[str] = ("png", "pdf"), control_dir: str | Path | None = None,
) -> ReportResult:
    """The whole pipeline; never raises on bad data (only on an unwritable study dir)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    study_dir = Path(study_dir)
    conventions = tuple(normalise_convention(c) for c in conventions)
    notes: list[str] = []
    summary: dict[str, Any] = {}
    has_runs = (study_dir / records.RUNS_DIR).is_dir()
    if has_runs:
        df = load_or_collect(study_dir, force=force_collect)
        summary = dict(df.attrs.get("collect", {}))
    elif (study_dir / records.RUNS_TABLE).exists():
        df = pd.read_parquet(study_dir / records.RUNS_TABLE)
        summary = dict(df.attrs.get("collect", {}))
        notes.append(f"no {records.RUNS_DIR}/ directory: using {records.RUNS_TABLE} as given")
    else:
        df = pd.DataFrame(columns=BASE_COLUMNS)
        notes.append(f"no {records.RUNS_DIR}/ directory and no {records.RUNS_TABLE} in {study_dir}: nothing to analyse")
    timings["collect"] = time.perf_counter() - t0
    miss_core = missing_columns(df, CORE_COLUMNS)
    miss_all = missing_columns(df)
    if miss_core and len(df):
        notes.append(f"the table lacks required columns {', '.join(miss_core)}: claims cannot be evaluated")
    elif miss_all and len(df):
        notes.append(f"the table lacks columns {', '.join(miss_all)}: analyses that need them are skipped")
    if not miss_core or not len(df):
        df, cn = clean(df)
        notes += cn
    if len(df) == 0 and not notes:
        notes.append("the study has no evaluation rows yet")
    study = str(df["study"].dropna().iloc[0]) if "study" in df and df["study"].notna().any() else study_dir.name
    tasks, task_problems = (load_task_evals(study_dir) if has_runs else (pd.DataFrame(), []))
    notes += task_problems
    fits = None
    t1 = time.perf_counter()
    if len(df) and not miss_core:
        try:
            fits = fit_study(df, conventions=[c for c in conventions if c in df.columns] or conventions,
                             n_boot=n_boot, seed=seed, loops=loops, weighted=weighted)
        except Exception as e:  # keep going: the report says what failed
            notes.append(f"fitting failed: {e.__class__.__name__}: {e}")
    timings["fits"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    if fits is None:
        fits_for_claims = StudyFits(loops=None, loops_note="no fits", conventions=conventions)
    else:
        fits_for_claims = fits
    claims = all_claims(df if not miss_core else pd.DataFrame(columns=BASE_COLUMNS), fits_for_claims, tasks,
                             conventions=conventions, n_boot=n_boot, seed=seed)
    timings["claims"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    loop_diag = load_loop_diagnostics(study_dir) if has_runs else pd.DataFrame()
    attention = load_attention(study_dir) if has_runs else pd.DataFrame()
    try:
        loop_sens = LD.loop_sensitivity(df) if len(df) and not miss_core else pd.DataFrame()
        loop_states = LD.state_table(loop_diag)
    except Exception as e:  # diagnostics never take the report down
        notes.append(f"loop diagnostics failed: {e.__class__.__name__}: {e}")
        loop_sens = loop_states = pd.DataFrame()
    tuning_rec, tuning_runs = TU.load_tuning(study_dir)  # a study may be tuned before its grid has run
    try:
        lr_sens = TU.lr_sensitivity(tuning_rec, tuning_runs)
    except Exception as e:  # the LR section never takes the report down
        notes.append(f"LR sensitivity failed: {e.__class__.__name__}: {e}")
        lr_sens = None
    grid_lrs = TU.grid_lrs(study_dir)
    figs: list[FigureResult] = []
    if figures and len(df) and not miss_core:
        figs = make_figures(df, tasks, fits, claims, study_dir / records.FIGURES_DIR, formats, loop_diag=loop_diag,
                            attention=attention, tuning=tuning_runs)
    control = control_for_study(study_dir, df, tasks, loop_sens, n_boot=n_boot, seed=seed)
    if control is not None and figures:
        figs.append(fig_control_depth(control, study_dir / records.FIGURES_DIR, formats))
    timings["figures"] = time.perf_counter() - t1
    missing = missing_list(summary, df if not miss_core else pd.DataFrame(), fits, claims, [])
    env = environment()
    cite, cite_note = find_control(study_dir, control_dir)
    notes += [cite_note] if cite_note else []
    md = render_markdown(study, study_dir, summary, df, fits, claims, figs, missing, notes, n_boot, seed, env,
                         loop_sens, loop_states, tasks, attention, lr=(lr_sens, grid_lrs), control=control,
                         cite=cite)
    payload = dict(study=study, generated=env, n_boot=n_boot, seed=seed, conventions=list(conventions),
                   input_problems=notes, collect=summary, fits=fits.to_dict() if fits else None,
                   claims=[c.to_dict() for c in claims], multiplier_disagreements=multiplier_disagreements(claims),
                   figures=[_relative(f.to_dict(), study_dir) for f in figs], missing=missing, timings_s=timings,
                   loop_sensitivity=loop_sens.to_dict("records"), loop_state=loop_states.to_dict("records"),
                   lr_tuning=dict(record=tuning_rec, sensitivity=lr_sens, grid_lrs=grid_lrs),
                   control=control.to_dict() if control is not None else None,
                   cited_control=dict(where=cite.shown, effects=cite.effects) if cite is not None else None)
    study_dir.mkdir(parents=True, exist_ok=True)
    records.atomic_write_text(study_dir / records.FITS, dumps(payload))
    records.atomic_write_text(study_dir / records.REPORT, md)
    return ReportResult(study_dir / records.REPORT, study_dir / records.FITS, claims, figs, missing,
                        time.perf_counter() - t0, timings)


def _relative(fig: dict, study_dir: Path) -> dict:
    """Figure paths relative to the study: a report that moves (or is committed) keeps working."""
    return fig | {"files": [os.path.relpath(p, study_dir) for p in fig.get("files") or []]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=DefaultsFormatter)
    ap.add_argument("study_dir")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--convention", action="append", default=None,
                    help="FLOPs convention(s): 6N_nonembed, 6N_total, exact (repeatable; none given: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    ap.add_argument("--loops", type=int, default=None, help="inference S for LoopMDM (default: largest S>=6 <= s_max)")
    ap.add_argument("--weighted", action="store_true", help="weight fits by the MC standard error of each NLL")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--control", default=None, metavar="DIR",
                    help="a reported positive-control study to cite beside each claim (default: STUDY_DIR/control "
                         "when it has a report)")
    ap.add_argument("--force-collect", action="store_true", help=f"rebuild {records.RUNS_TABLE} even if fresh")
    a = ap.parse_args(argv)
    sd = Path(a.study_dir)
    if not sd.is_dir():
        print(f"error: {sd} is not a directory (run the study first, or pass its --out directory)", file=sys.stderr)
        return 2
    if not any(records.read_evals(rd).rows for rd in records.list_run_dirs(sd)):
        print(f"error: {sd} has no run with an evaluation yet ({records.RUNS_DIR}/*/{records.EVALS}); nothing to report",
              file=sys.stderr)
        return 2
    if a.control is not None and not (Path(a.control) / records.FITS).is_file():
        print(f"error: --control: {a.control} holds no {records.FITS} (a reported control study: run "
              f"python -m analysis.report {a.control} first)", file=sys.stderr)
        return 2
    convs = a.convention or list(CONVENTIONS)
    bad = [c for c in convs if normalise_convention(c) not in CONVENTIONS]
    if bad:
        print(f"error: unknown convention(s) {bad}; choose from 6N_nonembed, 6N_total, exact", file=sys.stderr)
        return 2
    for place in [sd] + ([] if a.no_figures else [sd / records.FIGURES_DIR]):
        why = records.unwritable(place, "dir")
        if why is not None:
            print(f"error: study_dir: cannot write the report into {sd}: {why}; make it writable, or copy the study "
                  f"(its {records.RUNS_DIR}/) to a writable place and report there", file=sys.stderr)
            return 2
    res = run_report(sd, n_boot=a.bootstrap, conventions=convs, seed=a.seed, figures=not a.no_figures,
                     force_collect=a.force_collect, loops=a.loops, weighted=a.weighted, control_dir=a.control)
    for c in res.claims:
        vs = f" — {c.paper_verdict}" if c.paper_verdict else ""
        print(f"{c.verdict_text():>14}  {c.name}: {c.measured_str()} {c.ci_str()}{vs}")
    if res.missing:
        print(f"{len(res.missing)} item(s) missing — see the report")
    print(f"wrote {res.report_path} and {res.fits_path} in {res.seconds:.1f} s")
    return 0
