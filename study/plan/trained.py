"""A trained run as later stages find it: the config it was trained with and its complete checkpoints — read by
fine-tuning (a child needs its parent's network and weights) and by evaluation alike, so both say the same
thing when a run is not there yet."""

from __future__ import annotations

from pathlib import Path

import records
from model.config import ConfigError
from study.plan.config import RunConfig, from_dict


def run_config(run_dir: str | Path) -> tuple[RunConfig, str]:
    """The RunConfig a run was trained with (its config.yaml), and its identity hash as recorded then: the
    recorded hash wins over a recomputed one, so a run keeps its name if a default changed since."""
    run_dir = Path(run_dir)
    raw = records.read_config(run_dir)
    if raw is None:
        what = "does not exist" if not run_dir.exists() else f"has no {records.CONFIG} (not a run directory)"
        raise ConfigError("run", f"{run_dir} {what}; pass a run directory written by study.run / study.sweep")
    cfg = from_dict(raw)
    return cfg, records.recorded_hash(raw) or cfg.hash


def find_checkpoint(run_dir: str | Path, ckpt: str | int | None = "latest") -> Path:
    """A complete checkpoint of the run: the newest ('latest'), or the one at an exact step."""
    run_dir = Path(run_dir)
    found = records.complete_checkpoints(run_dir)
    if not found:
        raise ConfigError("run", f"{run_dir} has no complete checkpoint ({records.CKPT_DIR}/step_*); train it first "
                                 f"or wait for its first checkpoint")
    if ckpt is None or str(ckpt) == "latest":
        return found[-1]
    try:
        want = int(ckpt)
    except (TypeError, ValueError):
        raise ConfigError("ckpt", f"{ckpt!r} is neither 'latest' nor a step number") from None
    by_step = {records.ckpt_step(p): p for p in found}
    if want not in by_step:
        raise ConfigError("ckpt", f"no complete checkpoint at step {want} in {run_dir}; available steps: "
                                  f"{sorted(by_step)}")
    return by_step[want]
