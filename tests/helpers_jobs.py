"""Toy jobs for the launch tests: tiny, picklable, and shaped like the real trainer (resume from the
newest checkpoint at every start, checkpoint at step boundaries, stop when the preemption flag says so)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def count(run_dir: str, n_steps: int = 30, step_s: float = 0.2) -> dict[str, Any]:
    """"Train" a counter: one step per ``step_s`` seconds, a checkpoint (state.json) after every step.

    The state records every step done and every start, so a test can check that a preempted run resumed
    without redoing a step and ended where an uninterrupted twin did. Imports happen here, in the job, so
    the modules come from whatever the job's sys.path says: the launch's code snapshot."""
    import study.launch as launch
    import records

    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    ckpt = rd / "state.json"
    state: dict[str, Any] = records.read_json(ckpt) or {"step": 0, "value": 1, "steps_done": [], "starts": []}
    state["starts"].append({"job_id": os.environ.get("SLURM_JOB_ID"), "at_step": state["step"],
                            "store_file": records.__file__, "launch_file": launch.__file__,
                            "rank": os.environ.get("RANK"), "world": os.environ.get("WORLD_SIZE"),
                            "cwd": os.getcwd()})
    records.atomic_write_json(ckpt, state)
    records.heartbeat(rd, step=state["step"])
    while state["step"] < n_steps:
        if launch.PREEMPT.stop_requested():
            records.atomic_write_json(ckpt, state)  # (already saved at the last boundary; a real trainer saves here)
            records.mark_preempted(rd, step=state["step"], signals=list(launch.PREEMPT.signals))
            launch.PREEMPT.exit_for_requeue()
        time.sleep(step_s)
        state["step"] += 1
        state["value"] = (state["value"] * 31 + state["step"]) % 1_000_003
        state["steps_done"].append(state["step"])
        records.atomic_write_json(ckpt, state)
        records.append_jsonl(rd / records.METRICS, {"step": state["step"], "loss": 1.0 / state["step"]})
        records.heartbeat(rd, step=state["step"])
    records.mark_done(rd, {"value": state["value"]})
    return state


def expected_value(n_steps: int) -> int:
    """Where an uninterrupted run of `count` ends."""
    value = 1
    for step in range(1, n_steps + 1):
        value = (value * 31 + step) % 1_000_003
    return value


def read_state(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
