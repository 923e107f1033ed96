"""bench/gpu_check.py, the one-call GPU check, in its --small mode on the CPU: every section runs, each throughput
change comes out as a measured ratio, bf16 agrees with fp32, every eval path runs, and the spec advice is given.
(On a GPU the same script runs at the paper's shapes; the numbers here are only a smoke test.)"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_small_runs_every_section_and_prints_per_change_ratios(tmp_path):
    out = tmp_path / "check.json"
    dist_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--small", "--json", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    sections = res["sections"]
    assert set(sections) == {"bf16 and fp32 runs", "bf16 vs fp32", "eval paths on the device", "bare LM1B",
                             "micro-batch LM1B", "harness LM1B", "bare OWT", "micro-batch OWT", "harness OWT"}
    assert not res["skipped"] and not [k for k, v in sections.items() if "error" in v]
    for shape in ("LM1B", "OWT"):
        bare = sections[f"bare {shape}"]["rows"]
        looped = {row["variant"]: row for row in bare if row["family"].startswith("looped")}
        assert {"all changes", "as the harness optimises", "- rows head", "- vocab padding", "- no host syncs",
                "before #22"} <= set(looped)
        assert all(math.isfinite(row["time_vs_all"]) and row["time_vs_all"] > 0 for row in bare)
        assert {row["family"].split()[0] for row in bare} == {"looped", "same-size", "deeper"}
        harness = sections[f"harness {shape}"]["rows"]
        assert {(row["family"].split()[0], row["variant"]) for row in harness} == {
            ("looped", "all changes"), ("looped", "engine before"), ("looped", "before #22"),
            ("same-size", "all changes"), ("deeper", "all changes")}
        assert all(row["harness_vs_bare"] > 0 for row in harness if row["variant"] == "all changes")
    assert sections["bf16 vs fp32"]["agree"]
    paths = {k: v for k, v in sections["eval paths on the device"].items() if isinstance(v, dict)}
    assert len(paths) == 7 and all(v["ok"] for v in paths.values()), paths
    for spec in ("sweeps/paper_isoflop_lm1b.yaml", "sweeps/paper_isoflop_owt.yaml"):
        assert isinstance(res["advice"][spec]["batch.micro_batch"], int)
    table = r.stdout
    assert "- rows head" in table and "before #22" in table and "x all" in table
    assert "set in sweeps/paper_isoflop_owt.yaml: batch.micro_batch:" in table


def test_the_bare_step_as_the_harness_optimises_keeps_bf16_weights_and_an_fp32_master():
    """Variant.mixed (the like-for-like reference for the harness's overhead) on the CPU in bf16: it must step
    (its in-place copy back into the bf16 weights once failed on the GPU) and leave the weights equal to the
    fp32 master, rounded."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from steps import BareStep, Variant
    from model import ModelConfig

    cfg = ModelConfig(vocab_size=40, d_model=32, n_heads=2, n_head_layers=1, n_mid_layers=1, n_tail_layers=1,
                      s_max=2, max_seq_len=16)
    bare = BareStep(cfg, torch.device("cpu"), torch.bfloat16)
    v = Variant(name="mixed", mixed=True, compile=False, fused=False)
    model = bare.model(v)
    before = [p.detach().clone() for p in model.parameters()]
    step = bare.make(v, loops=2, batch=2, seq_len=16)
    for _ in range(2):
        assert torch.isfinite(step())
    after = list(model.parameters())
    assert all(p.dtype == torch.bfloat16 and p.grad is None for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_the_h2d_probe_finds_the_loss_paths_host_to_device_moves_per_micro_step():
    """bench/h2d_probe.py on CPU: the batch, the mask, t and the masked-row index are each moved once per
    micro-step (the copies the loss path makes on a GPU, pinned there); nothing is counted during warm-up."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("h2d_probe", ROOT / "bench" / "h2d_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n, hits = mod.probe("cpu", "fp32", steps=2, warmup=1, accum=2)
    assert n == 2
    ours = {where: c for (what, where, memory), c in hits.items() if where.endswith("diffusion.py:56:to_device")}
    assert sorted(ours.values()) == [4, 4, 4, 4]  # 4 call sites (batch, mask, t, rows), each 2 micro-steps x 2 steps
    assert all(memory == "host" for (_, _, memory) in hits)
    import torch
    assert torch.Tensor.to.__name__ == "to"  # the probe put torch back as it was
