"""How long `status` takes on a big study: scan_study over N fake run directories.

The target is a login node answering for 1,000 runs in well under 2 s, squeue included (one call for all).
Each fake run has a 200-line metrics log (status must read only its tail) and cycles through every state.

    python bench/bench_status.py [--runs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import records


def make_study(root: Path, n: int) -> None:
    row = json.dumps({"step": 0, "tokens": 0, "loops": 3, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0,
                      "tokens_per_s": 1e5, "mfu": 0.4, "wall_s": 1.0, "flops_6N_nonembed": 1e15,
                      "flops_6N_total": 1.1e15, "flops_exact": 1.2e15}) + "\n"
    keys = []
    for i in range(n):
        key = hashlib.sha256(str(i).encode()).hexdigest()
        keys.append(key)
        rd = records.run_dir(root, f"loopmdm d256 s{i % 12}", key)
        (rd / records.CKPT_DIR / "step_00000100").mkdir(parents=True)
        records.atomic_write_yaml(rd / "config.yaml", {"meta": {"hash": key}})
        with open(rd / records.METRICS, "w") as f:
            f.write(row * 200)
        kind = i % 5
        if kind == 0:
            records.mark_done(rd, {"final_loss": 1.0})
        elif kind == 1:
            records.heartbeat(rd, step=200)
        elif kind == 2:
            records.mark_failed(rd, "boom", "Traceback ...")
        elif kind == 3:
            records.heartbeat(rd, step=100)
            records.mark_preempted(rd, step=100)
    records.ledger_intent(root, "bench", keys, "slurm")
    records.ledger_submitted(root, "bench", {k: f"{1000 + i}" for i, k in enumerate(keys)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = time.perf_counter()
        make_study(root, args.runs)
        print(f"made {args.runs} run dirs in {time.perf_counter() - t:.1f} s")
        have_squeue = records.slurm_queue() is not None
        for label, queue in (("no scheduler", None), ("with squeue" if have_squeue else "squeue absent", "auto")):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                sts = records.scan_study(root) if queue == "auto" else records.scan_study(root, queue=None)
                times.append(time.perf_counter() - t)
            assert len(sts) == args.runs
            states = {s: sum(x.state == s for x in sts) for s in ("done", "running", "failed", "preempted", "pending")}
            print(f"scan_study {args.runs} runs, {label}: median {statistics.median(times) * 1000:.0f} ms, "
                  f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms  {states}")


if __name__ == "__main__":
    main()
