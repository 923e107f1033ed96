"""``python -m analysis.fit DATA.csv``: refit a scaling law on anyone's (N, D or C, loss) points.

CSV columns: ``loss`` and either ``N`` and ``D`` or ``C`` (FLOPs); optional ``family`` (one fit per
family), ``budget`` (IsoFLOP grouping; defaults to C), ``run`` (bootstrap cluster; defaults to the row),
``se`` (MC standard error of the loss, used with ``--weighted``). Missing C is taken as 6·N·D, missing D
as C/(6·N).

    python -m analysis.fit points.csv --law parametric --bootstrap 1000 --out fit.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

import records

from . import curves as F
from .util import DefaultsFormatter, dumps, fmt

LAWS = ("frontier", "parametric", "isoflop")


def prepare(df: pd.DataFrame, law: str) -> tuple[pd.DataFrame, list[str]]:
    """Normalise column names and derive C/D where the law needs them; return problems found."""
    cols = {c.lower(): c for c in df.columns}
    ren = {cols[k]: k for k in ("loss", "family", "budget", "run", "se") if k in cols}
    ren.update({cols[k]: k.upper() for k in ("n", "d", "c") if k in cols})
    df = df.rename(columns=ren).copy()
    problems = []
    if "loss" not in df:
        problems.append("no 'loss' column")
    if "C" not in df and {"N", "D"} <= set(df.columns):
        df["C"] = 6.0 * df["N"] * df["D"]
    if "D" not in df and {"N", "C"} <= set(df.columns):
        df["D"] = df["C"] / (6.0 * df["N"])
    need = {"frontier": ["C"], "parametric": ["N", "D"], "isoflop": ["N", "D"]}[law]
    if law == "isoflop" and "budget" not in df and "C" not in df:
        need = need + ["budget or C"]
    problems += [f"no '{c}' column" for c in need if c not in df]
    if "family" not in df:
        df["family"] = "all"
    if "run" not in df:
        df["run"] = np.arange(len(df))
    if law == "isoflop" and "budget" not in df and "C" in df:
        df["budget"] = df["C"]
    return df, problems


def bad_rows(df: pd.DataFrame, law: str, given: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Rows a fit cannot use, by reason, as 1-based data row numbers of the CSV (header excluded): a loss that
    is not a positive finite number, or N / D / C / budget that are not positive finite numbers. Only the
    columns the file ``given`` are named (one derived from them, C = 6ND, is bad exactly when they are)."""
    cols = ["loss"] + [c for c in ("N", "D", "C", "budget", "se") if c in df and (given is None or c in given)]
    out: dict[str, list[int]] = {}
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        text = v.isna() & df[c].notna()
        bad = text | ~np.isfinite(v.fillna(np.nan).to_numpy(float)) | (v <= 0 if c != "se" else v < 0)
        for reason, mask in ((f"{c} is not a number", text), (f"{c} is missing, infinite or {'negative' if c == 'se' else 'not > 0'}", bad & ~text)):
            rows = [int(i) + 1 for i in np.flatnonzero(mask.to_numpy())]
            if rows:
                out[reason] = rows
    return out


def run_fit(df: pd.DataFrame, law: str, n_boot: int = 1000, seed: int = 0, weighted: bool = False,
            envelope: bool = True) -> dict[str, Any]:
    """One fit per family; returns {family: fit object}."""
    out: dict[str, Any] = {}
    for fam, d in df.groupby("family", sort=True):
        w = F.mc_weights(d["loss"].to_numpy(float), d["se"].to_numpy(float)) if weighted and "se" in d else None
        rng = np.random.default_rng(seed)
        if law == "frontier":
            out[str(fam)] = F.fit_frontier(d["C"].to_numpy(float), d["loss"].to_numpy(float), clusters=d["run"].to_numpy(),
                                           weights=w, envelope=envelope, n_boot=n_boot, seed=rng, family=str(fam))
        elif law == "parametric":
            out[str(fam)] = F.fit_parametric(d["N"].to_numpy(float), d["D"].to_numpy(float), d["loss"].to_numpy(float),
                                             clusters=d["run"].to_numpy(), weights=w, n_boot=n_boot, seed=rng,
                                             family=str(fam))
        else:
            out[str(fam)] = F.fit_isoflop(d["budget"].to_numpy(float), d["N"].to_numpy(float), d["D"].to_numpy(float),
                                          d["loss"].to_numpy(float), clusters=d["run"].to_numpy(), n_boot=n_boot,
                                          seed=rng, family=str(fam))
    return out


def outlier_rows(results: dict[str, Any], df: pd.DataFrame, k: float) -> dict[str, list[int]]:
    """Per family, the data rows (0-based positions in ``df``) whose residual in log loss lies more than
    ``k`` robust standard deviations (1.4826 x MAD) from the median residual. A rule, not a judgement: it is
    always reported; ``--drop-outliers`` applies it."""
    out: dict[str, list[int]] = {}
    for fam, r in results.items():
        resid = np.array([p["resid_log"] for p in (getattr(r, "residuals", None) or [])], float)
        rows = np.flatnonzero((df["family"].astype(str) == fam).to_numpy())
        if resid.size != rows.size:
            continue
        flagged = rows[F.mad_outliers(resid, k)]
        if flagged.size:
            out[fam] = [int(i) for i in flagged]
    return out


PARAMS = {"frontier": ("E", "A", "alpha"), "parametric": ("E", "A", "B", "alpha", "beta")}


def _moves(before: dict[str, Any], after: dict[str, Any], law: str) -> str:
    parts = []
    for fam, r in before.items():
        a = after.get(fam)
        if a is None or not (r.ok and a.ok) or law not in PARAMS:
            continue
        parts.append(f"{fam}: " + ", ".join(f"{p} {fmt(getattr(r, p).estimate)} -> {fmt(getattr(a, p).estimate)}"
                                             for p in PARAMS[law]))
    return "; ".join(parts)


def _iv(x: F.Interval | None) -> str:
    return "—" if x is None else f"{fmt(x.estimate, 4)} [{fmt(x.low)}, {fmt(x.high)}]"


def format_table(results: dict[str, Any], law: str) -> str:
    lines = []
    for fam, r in results.items():
        lines.append(f"== {fam}: {r.message}")
        if law == "frontier" and r.ok:
            d = r.diagnostics
            lines += [f"  L(C) = E + A*C^-alpha   ({r.n_fit_points} {r.method} points)",
                      f"  E     {_iv(r.E)}", f"  A     {_iv(r.A)}", f"  alpha {_iv(r.alpha)}",
                      f"  converged={d.converged} starts agree {d.n_starts_agree}/{d.n_starts} "
                      f"RMSE(log)={fmt(d.rmse_log)} R2={fmt(d.r2_log)} boot ok {d.n_boot_ok}/{d.n_boot}"]
        elif law == "parametric" and r.ok:
            d = r.diagnostics
            lines += [f"  L(N,D) = E + A/N^alpha + B/D^beta   ({r.n_points} points)",
                      *(f"  {k:<6}{_iv(getattr(r, k))}" for k in ("E", "A", "B", "alpha", "beta")),
                      f"  N* ~ C^{_iv(r.N_exponent)}   D* ~ C^{_iv(r.D_exponent)}",
                      f"  converged={d.converged} ({d.optimizer_message}) grad={fmt(d.grad_norm)} starts agree "
                      f"{d.n_starts_agree}/{d.n_starts} RMSE(log)={fmt(d.rmse_log)} R2={fmt(d.r2_log)} "
                      f"boot ok {d.n_boot_ok}/{d.n_boot}"]
        elif law == "isoflop":
            for b in r.budgets:
                lines.append(f"  C={fmt(b.budget)}: N*={_iv(b.N_star)} L*={_iv(b.L_star)} "
                             f"{'trusted' if b.trusted else 'NOT trusted'} {b.note}")
            if r.N_opt is not None:
                lines.append(f"  N* = k C^a: a={_iv(r.N_opt.exponent)}   D* = k C^b: b={_iv(r.D_opt.exponent)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.fit", description=__doc__.split("\n\n")[0],
                                 formatter_class=DefaultsFormatter)
    ap.add_argument("csv", help="one row per point: loss and N,D (parametric, isoflop) or C (frontier); optional family, run, se, budget")
    ap.add_argument("--law", choices=LAWS, default="parametric", help="frontier: L(C); parametric: L(N, D); isoflop: per-budget parabolas")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (over runs)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    ap.add_argument("--weighted", action="store_true", help="weight by 1/se^2 (needs an 'se' column)")
    ap.add_argument("--all-points", action="store_true", help="frontier: fit all points, not the lower envelope")
    ap.add_argument("--out", default=None, help="write the fits as JSON here")
    ap.add_argument("--outlier-k", type=float, default=F.OUTLIER_K,
                    help="outlier rule: |residual in log loss - median| > k x 1.4826 MAD (always reported)")
    ap.add_argument("--drop-outliers", action="store_true", help="refit without the points the outlier rule flags")
    ap.add_argument("--drop-bad-rows", action="store_true",
                    help="drop rows with a non-numeric, non-positive or non-finite value (and say how many) instead "
                         "of refusing the file")
    a = ap.parse_args(argv)
    try:
        raw = pd.read_csv(a.csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        print(f"error: cannot read {a.csv}: {e}", file=sys.stderr)
        return 2
    df, problems = prepare(raw, a.law)
    if problems:
        print(f"error: {a.csv}: {'; '.join(problems)} (columns present: {', '.join(raw.columns)})", file=sys.stderr)
        return 2
    why = records.unwritable(a.out, "file") if a.out else None
    if why is not None:
        print(f"error: --out: cannot write {a.out}: {why}; pass --out to a writable place", file=sys.stderr)
        return 2
    in_file = {str(c).lower() for c in raw.columns}
    bad = bad_rows(df, a.law, given=[c for c in df.columns if c.lower() in in_file])
    if bad:
        listing = "; ".join(f"{why}: rows {', '.join(map(str, rows[:10]))}{' ...' if len(rows) > 10 else ''}"
                            for why, rows in bad.items())
        if not a.drop_bad_rows:
            print(f"error: {a.csv}: {listing} (fix them, or pass --drop-bad-rows)", file=sys.stderr)
            return 2
        drop = sorted({r - 1 for rows in bad.values() for r in rows})
        print(f"dropped {len(drop)} of {len(df)} rows: {listing}")
        df = df.drop(df.index[drop])
    if df.empty:  # a header and nothing else, or every row dropped: nothing to fit, nothing to write
        print(f"error: {a.csv}: no data rows{' left' if bad else ''} to fit (a header alone is not data)",
              file=sys.stderr)
        return 2
    for c in ["loss"] + [c for c in ("N", "D", "C", "budget", "se") if c in df]:
        df[c] = pd.to_numeric(df[c])
    df = df.reset_index(drop=True)
    res = run_fit(df, a.law, a.bootstrap, a.seed, a.weighted, envelope=not a.all_points)
    flagged = outlier_rows(res, df, a.outlier_k) if a.law != "isoflop" else {}
    if flagged:
        rows = sorted(i for v in flagged.values() for i in v)
        without = run_fit(df.drop(index=rows), a.law, 0, a.seed, a.weighted, envelope=not a.all_points)
        print(f"outliers (|residual| > {a.outlier_k:g} x MAD in log loss): {len(rows)} point(s), data rows "
              f"{', '.join(str(i + 1) for i in rows[:20])}{' ...' if len(rows) > 20 else ''}; without them: "
              f"{_moves(res, without, a.law)}" + ("" if a.drop_outliers else " (--drop-outliers refits without them)"))
        if a.drop_outliers:
            df = df.drop(index=rows)
            res = run_fit(df, a.law, a.bootstrap, a.seed, a.weighted, envelope=not a.all_points)
    print(format_table(res, a.law))
    if a.out:
        records.atomic_write_text(Path(a.out), dumps({"law": a.law, "csv": str(a.csv), "n_boot": a.bootstrap,
                                              "fits": {k: v.to_dict() for k, v in res.items()}}))
        print(f"wrote {a.out}")
    return 0 if all(r.ok for r in res.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
