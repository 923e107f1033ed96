"""How long `python -m study.sweep SPEC --dry-run` takes for a 10,000-run grid (target: under 2 s).

A benchmark, not a test. Builds a spec in memory (100 widths x 100 budgets, no baselines, so exactly
10,000 runs) and times expansion + plan rows, and separately the whole command in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study.plan import spec as sweep  # noqa: E402
from study.plan import table  # noqa: E402

SPEC = {
    "study": "bench-plan",
    "base": {"model": {"n_heads": 4, "s_max": 12, "vocab_size": 50258, "max_seq_len": 1024},
             "data": {"tokenizer": "gpt2", "seq_len": 1024}, "batch": {"global_batch": 512}},
    "axes": {"model.d_model": [64 * (i + 1) for i in range(100)],
             "budget.flops": [1e18 * 1.05 ** i for i in range(100)]},
}


def main() -> None:
    spec = sweep.parse_spec(SPEC)
    t0 = time.perf_counter()
    runs = sweep.expand(spec)
    t1 = time.perf_counter()
    rows = [table.plan_row(r, spec) for r in runs]
    t2 = time.perf_counter()
    text = table.format_plan(rows)
    t3 = time.perf_counter()
    print(f"{len(runs)} runs: expand {t1 - t0:.2f} s, plan rows {t2 - t1:.2f} s, table {t3 - t2:.2f} s, "
          f"in-process total {t3 - t0:.2f} s ({len(text.splitlines())} lines)")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "spec.yaml"
        p.write_text(yaml.safe_dump(SPEC))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "study.sweep", str(p), "--dry-run"], check=True,
                       stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
        print(f"whole command in a fresh interpreter (imports included): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
