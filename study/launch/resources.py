"""What a run asks of the scheduler (a sweep spec's ``resources:``), validated before anything is written."""


from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from model.config import ConfigError



log = logging.getLogger(__name__)

EXECUTORS = ("auto", "slurm", "local", "debug")



# ---------------------------------------------------------------------------------------- resources
class ResourceError(ConfigError):
    """A resources setting that cannot work; the message names the field (``resources.X``) and the fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"resources.{field_name}", message)


@dataclass(frozen=True)
class ResourceSpec:
    """What a run asks of the scheduler. One job array is submitted per distinct ResourceSpec."""

    executor: str = "auto"  # auto = slurm where `sbatch` is on PATH, else local
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0  # also the number of tasks (processes) per node
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 60
    array_parallelism: int = 256
    local_workers: int = 1  # local executor: runs trained at once, each in its own process with cores / workers threads
    requeue: bool = True  # on preemption/timeout: requeue (True) or checkpoint and stop (False)
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: time to checkpoint
    max_timeouts: int = 20  # requeues after hitting the time limit before giving up
    additional: Mapping[str, Any] = field(default_factory=dict)  # extra sbatch flags, e.g. {"exclusive": True}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ResourceSpec":
        """From a sweep spec's ``resources:`` block; unknown keys are errors, not silently dropped."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ResourceError(unknown[0], f"unknown setting; valid ones are {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["additional"] = dict(self.additional)
        return d

    def resolved_executor(self) -> str:
        if self.executor == "auto":
            return "slurm" if shutil.which("sbatch") else "local"
        return self.executor

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU (DeepSpeed's layout); one process on a CPU-only node."""
        return max(1, self.gpus_per_node)

    def validate(self, check_cluster: bool = False) -> "ResourceSpec":
        """Raise ResourceError for settings that cannot work. ``check_cluster`` also asks ``sinfo`` whether
        the partition exists (slurm only), so a typo fails at plan time instead of at sbatch."""
        if self.executor not in EXECUTORS:
            raise ResourceError("executor", f"{self.executor!r} is not one of {', '.join(EXECUTORS)}")

        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ResourceError(name, f"{getattr(self, name)!r}: {msg}")

        need(isinstance(self.nodes, int) and self.nodes >= 1, "nodes", "must be an integer >= 1 (1 for one node)")
        need(isinstance(self.gpus_per_node, int) and self.gpus_per_node >= 0, "gpus_per_node",
             "must be an integer >= 0 (0 for CPU-only)")
        need(self.cpus_per_task is None or (isinstance(self.cpus_per_task, int) and self.cpus_per_task >= 1),
             "cpus_per_task", "must be an integer >= 1, or left out for the cluster default")
        need(self.mem_gb is None or (isinstance(self.mem_gb, (int, float)) and self.mem_gb > 0), "mem_gb",
             "must be > 0 GB, or left out for the cluster default")
        need(isinstance(self.time_min, int) and self.time_min >= 1, "time_min",
             "must be an integer number of minutes >= 1")
        need(isinstance(self.array_parallelism, int) and self.array_parallelism >= 1, "array_parallelism",
             "must be an integer >= 1 (how many array tasks may run at once)")
        need(isinstance(self.local_workers, int) and self.local_workers >= 1, "local_workers",
             "must be an integer >= 1 (how many runs the local executor trains at once)")
        need(isinstance(self.signal_delay_s, int) and 0 <= self.signal_delay_s < self.time_min * 60,
             "signal_delay_s", f"must be >= 0 and shorter than time_min ({self.time_min * 60} s), or the "
             "checkpoint signal arrives before the run starts")
        need(isinstance(self.max_timeouts, int) and self.max_timeouts >= 0, "max_timeouts", "must be >= 0")
        need(isinstance(self.additional, Mapping) and all(isinstance(k, str) for k in self.additional),
             "additional", "must be a mapping of sbatch flag names (without --) to values")
        ex = self.resolved_executor()
        if ex == "local" and self.nodes != 1:
            raise ResourceError("nodes", f"{self.nodes}: the local executor runs on one node; set nodes: 1 "
                                "or executor: slurm")
        if ex == "slurm" and check_cluster:
            parts = slurm_partitions()
            if parts is not None and self.partition is not None and self.partition not in parts:
                raise ResourceError("partition", f"{self.partition!r} does not exist on this cluster; available: "
                                    f"{', '.join(parts) or '(none)'}")
        return self


def slurm_partitions() -> list[str] | None:
    """Partition names from ``sinfo`` (None when it cannot be asked)."""
    exe = shutil.which("sinfo")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return sorted({p.strip().rstrip("*") for p in out.split() if p.strip()})

