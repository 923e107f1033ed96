"""``system.wandb``: the run's training metrics and validation NLLs mirrored to Weights & Biases, offered the way
OLMo-core and torchtitan offer it — off by default, one switch, W&B's own environment variables for the rest
(``WANDB_PROJECT``, default ``loopmdm``; ``WANDB_ENTITY``; ``WANDB_MODE=offline`` to write locally and
``wandb sync`` later). Like the TensorBoard mirror it is a view: ``metrics.jsonl`` and ``evals.jsonl`` stay the
record, and nothing here is imported unless the switch is on.

One W&B run per run directory, across every restart: its id is kept in ``<run>/wandb/run_id`` and each start
resumes it (``resume="allow"``). A resumed run replays the steps after its checkpoint (bit-identically); those
that W&B already holds are not logged again. What W&B holds is read from its own transaction logs in
``<run>/wandb`` (``run-<id>.wandb``, written online and offline), so a step logged just before a ``kill -9``
counts and a step lost with the process is logged on the replay.
"""

from __future__ import annotations

import secrets
import struct
from pathlib import Path
from typing import Any

import records

TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "loops")  # as the TensorBoard mirror names them
LOG_HEADER = 7  # ':W&B' + a 2-byte magic + a version byte, before the first 32 KiB block
LOG_BLOCK = 32 * 1024  # W&B's transaction log is framed like LevelDB's: blocks of chunks (crc, length, type)


def val_key(row: dict) -> str:
    eps = "" if row.get("exit_threshold") is None else f"_exit{row['exit_threshold']:g}"
    return f"val/nll_S{row['eval_loops']}{eps}"


def log_records(path: Path):
    """The records of one W&B transaction log, as bytes; a torn tail (a killed writer) ends the scan."""
    data = path.read_bytes()
    pos, pending = LOG_HEADER, b""
    while pos + 7 <= len(data):
        left = LOG_BLOCK - pos % LOG_BLOCK
        if left < 7:  # a block's padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + length > len(data):
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # a whole record
            yield chunk
        elif kind == 2:  # first, middle and last pieces of a record
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def logged_steps(run_dir: Path, run_id: str) -> list[int]:
    """Every history step W&B recorded for this run in this run directory, over all its (re)starts."""
    from wandb.proto import wandb_internal_pb2 as pb

    steps = []
    for path in sorted(records.wandb_dir(run_dir).glob(f"*/run-{run_id}.wandb")):
        if path.parent.is_symlink():  # latest-run: W&B's link to the newest of them
            continue
        for raw in log_records(path):
            rec = pb.Record()
            try:
                rec.ParseFromString(raw)
            except Exception:  # noqa: BLE001 - a damaged record: the rest of the file is still read
                continue
            if rec.WhichOneof("record_type") == "history":
                steps.append(int(rec.history.step.num))
    return steps


def run_id(run_dir: Path) -> str:
    """The run directory's W&B run id, made on its first start."""
    path = records.wandb_dir(run_dir) / records.WANDB_RUN_ID
    if path.is_file():
        return path.read_text().strip()
    rid = f"{records.safe_slug(run_dir.name)[:48]}-{secrets.token_hex(4)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_text(path, rid + "\n")
    return rid


class WandbLog:
    """Rank 0's mirror of one run into W&B; steps at or below ``done`` (already in W&B) are skipped."""

    def __init__(self, run: Any, done: int):
        self.run, self.done = run, done

    def log(self, values: dict[str, Any], step: int) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        if step > self.done and values:
            self.run.log(values, step=step)

    def log_train(self, row: dict, step: int) -> None:
        self.log({f"train/{k}": row.get(k) for k in TRAIN_KEYS}, step)

    def log_eval(self, rows: list[dict], step: int) -> None:
        self.log({val_key(r): r["nll"] for r in rows}, step)

    def close(self, status: str = "done") -> None:
        self.run.finish(exit_code=0 if status in ("done", "preempted") else 1)


def open_run(cfg, run_dir: Path, rank: int, quiet: bool = False) -> WandbLog | None:
    """The W&B mirror of this run on rank 0 with ``system.wandb``, resuming its W&B run; None otherwise."""
    if not cfg.system.wandb or rank != 0:
        return None
    import os

    import wandb  # the config checked that it is installed

    run_dir = Path(run_dir)
    rid = run_id(run_dir)
    done = max(logged_steps(run_dir, rid), default=-1)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "loopmdm", id=rid, resume="allow",
                     name=run_dir.name, group=cfg.meta.get("study"), dir=str(run_dir),
                     config=cfg.to_dict(), settings=wandb.Settings(console="off", silent=quiet))
    return WandbLog(run, max(done, (run.step or 0) - 1))
