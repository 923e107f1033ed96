"""Run under ``torchrun --nproc_per_node 2``: for each (ZeRO stage, precision) train a tiny run to the end,
then take it back to its step-3 checkpoint as a kill after that checkpoint would (delete the newer checkpoint
and DONE.json), resume, and compare the final full weights with the uninterrupted ones. Rank 0 writes a JSON
line per case to the file given as argv[1]; argv[2] is the corpus, argv[3] the cache, argv[4] a work dir."""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import records
from study.plan import config as C
from study.train import train

out_file, corpus, cache, work = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
CASES = [(z, p) for p in ("fp32", "bf16") for z in (0, 2, 3)]

for zero, precision in CASES:
    cfg = C.from_dict({
        "model": {"d_model": 32, "n_heads": 2, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 3},
        "data": {"corpus": corpus, "tokenizer": "byte", "seq_len": 32, "cache_dir": cache},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "ema": 0.9}, "batch": {"global_batch": 4},
        "budget": {"steps": 6}, "eval": {"points": 2, "n_seqs": 4, "n_draws": 2},
        "system": {"zero_stage": zero, "log_every": 1, "ckpt_every": 3, "keep_last": 3, "num_threads": 1},
        "precision": precision})
    run = work / f"z{zero}-{precision}"
    train(cfg, run, quiet=True)
    rank = torch.distributed.get_rank()
    ref = load_file(str(records.latest_checkpoint(run) / "model.safetensors"))
    ref_ema = load_file(str(records.latest_checkpoint(run) / "ema.safetensors"))
    torch.distributed.barrier()
    if rank == 0:
        shutil.rmtree(records.ckpt_root(run) / records.ckpt_name(6))
        (run / records.DONE).unlink()
        shutil.copytree(run, work / f"z{zero}-{precision}-at3")  # left for the cross-world-size check
    torch.distributed.barrier()
    summary = train(cfg, run, quiet=True)
    got = load_file(str(records.latest_checkpoint(run) / "model.safetensors"))
    got_ema = load_file(str(records.latest_checkpoint(run) / "ema.safetensors"))
    n_params = sum(v.numel() for v in got.values())
    same = ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref) and \
        all(torch.equal(ref_ema[k], got_ema[k]) for k in ref_ema)
    steps = [m["step"] for m in records.read_jsonl(run / records.METRICS)]
    evals = [e for e in records.read_jsonl(run / records.EVALS) if e.get("is_final")]
    if rank == 0:
        with open(out_file, "a") as f:
            f.write(json.dumps({"zero": zero, "precision": precision, "identical": same, "n_params": n_params,
                                "steps": steps, "status": summary["status"], "world": summary.get("world_size"),
                                "final_nll": [e["nll"] for e in evals]}) + "\n")
