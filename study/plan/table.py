"""The plan table: what each planned run costs (parameters, steps, tokens, FLOPs under every convention, the
estimated GPU-hours and CPU-minutes) — what ``python -m study.sweep SPEC --dry-run`` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from model import flops
from study.plan.planned import PlannedRun

if TYPE_CHECKING:
    from study.plan.spec import Spec

CPU_GFLOPS_NOTE = "the spec's estimate.cpu_gflops (default: the demo's rate on 2 cores, evals included)"


def plan_row(pr: PlannedRun, spec: Spec) -> dict:
    cfg = pr.cfg
    p = flops.param_counts(cfg.model)
    row = {"slug": pr.slug, "hash": None if pr.pending else pr.hash[:12], "role": pr.role,
           "stage": "tune" if pr.tune is not None else ("finetune" if pr.parent is not None else "grid"),
           "groups": [g["group"] for g in pr.groups], "axes": pr.axes, "params_embedding": p.embedding,
           "params_nonembedding": p.nonembedding, "params_effective": p.effective_nonembedding(cfg.model.expected_loops),
           "steps": cfg.steps, "tokens": cfg.steps * cfg.tokens_per_step, "resource_class": pr.resource_class,
           "lr": None if pr.pending else cfg.optim.lr,
           "lr_source": pr.lr_source or ({"source": "tune"} if pr.tune else None)}
    for conv in flops.CONVENTIONS:
        per_step = cfg.flops_per_step(conv)
        row[f"flops_per_step_{conv}"] = per_step
        row[f"flops_{conv}"] = per_step * cfg.steps
    rate = spec.estimate["tflops_per_gpu"] * 1e12 * spec.estimate["mfu"]  # GPU-hours do not depend on GPU count
    row["est_gpu_hours"] = row["flops_exact"] / rate / 3600
    row["est_cpu_minutes"] = row["flops_exact"] / (spec.estimate["cpu_gflops"] * 1e9) / 60
    ratios = [g["flops_ratio"] for g in pr.groups if "flops_ratio" in g]
    row["flops_ratio_vs_looped"] = ratios[0] if ratios else None
    return row


def _lr_text(row: dict) -> str:
    """The LR column: the value, marked when the tuning stage chose it; a pending run's comes after tuning."""
    src = row.get("lr_source") or {}
    if row.get("lr") is None:
        return "after tuning"
    return f"{row['lr']:.3g}" + (" (tuned)" if src.get("source") == "tune" and row.get("stage") != "tune" else "")


def format_plan(rows: list[dict]) -> str:
    cols = [("slug", "slug", "{}"), ("hash", "hash", "{}"), ("role", "role", "{}"),
            ("N_emb", "params_embedding", "{:.3g}"), ("N_nonemb", "params_nonembedding", "{:.3g}"),
            ("N_eff", "params_effective", "{:.3g}"), ("steps", "steps", "{}"), ("tokens", "tokens", "{:.3g}"),
            ("LR", "lr", None),
            ("C/step exact", "flops_per_step_exact", "{:.3g}"), ("C 6N_nonemb", "flops_6N_nonembed", "{:.3g}"),
            ("C 6N_total", "flops_6N_total", "{:.3g}"), ("C exact", "flops_exact", "{:.3g}"),
            ("C/step vs loop", "flops_ratio_vs_looped", "{:.3f}"), ("GPU-h", "est_gpu_hours", "{:.3g}"),
            ("CPU-min", "est_cpu_minutes", "{:.2g}")]
    table = [[h for h, _, _ in cols]] + [[_lr_text(r) if f is None else "—" if r.get(k) is None else f.format(r[k])
                                          for _, k, f in cols] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    total = {k: sum(r[k] for r in rows) for k in ("flops_exact", "est_gpu_hours", "est_cpu_minutes")}
    lines.append(f"{len(rows)} runs; {total['flops_exact']:.3g} FLOPs (exact); ~{total['est_gpu_hours']:.3g} GPU-hours; "
                 f"~{total['est_cpu_minutes']:.3g} CPU-minutes at {CPU_GFLOPS_NOTE}")
    return "\n".join(lines)
