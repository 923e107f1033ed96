"""Studies drawn from a known law: the ground truth that tests and the benchmark check the analysis against.

The looped family is built to be *exactly* ``multiplier`` times cheaper than the same-size baseline: a
LoopMDM run of size N trained with C FLOPs has the loss the baseline of size N would have with
``multiplier * C`` FLOPs, at every point of its training. So its compute frontier is the baseline's
shifted by that factor, and both the fitted multiplier and the paper's crossing protocol must recover it.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

import records

# A small-scale law in the Chinchilla form, in nats/token.
LAW = dict(E=1.9, A=60.0, B=150.0, alpha=0.34, beta=0.30)



def _heads(d: int) -> int:
    """A head count a real model of width ``d`` could have (head dimension even, about 64 wide): the config
    must describe a valid model, since collect reads its FLOPs from it."""
    return next(h for h in range(max(1, d // 64), 0, -1) if d % h == 0 and (d // h) % 2 == 0)

def law_loss(N: Any, D: Any, law: dict[str, float] = LAW) -> np.ndarray:
    return law["E"] + law["A"] / np.asarray(N, float) ** law["alpha"] + law["B"] / np.asarray(D, float) ** law["beta"]


def optimal_size(C: float, law: dict[str, float] = LAW) -> float:
    """Compute-optimal N under C = 6 N D (closed form of the Chinchilla law)."""
    a, b = law["alpha"], law["beta"]
    G = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b))


def isoflop_sizes(C: float, factors: tuple[float, ...], law: dict[str, float] = LAW) -> list[float]:
    """Sizes around the optimum of budget C, rounded to 2 significant digits (like a real size ladder)."""
    return [float(f"{optimal_size(C, law) * f:.2g}") for f in factors]


@dataclass
class SyntheticSpec:
    """What to draw. Sizes are non-embedding parameter counts; budgets are 6*N_eff*D FLOPs."""

    study: str = "synthetic"
    budgets: tuple[float, ...] = (1e15, 3e15, 1e16, 3e16, 1e17)
    size_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # x the baseline's optimum per budget
    seeds: tuple[int, ...] = (0,)
    s_max: int = 8
    multiplier: float = 3.3            # loopmdm at S >= 6 vs same-size mdm
    deeper_multiplier: float = 2.0     # mdm_deeper vs same-size mdm (LoopMDM beats it when < multiplier)
    loops_scan: tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16)
    exit_thresholds: tuple[float, ...] = (0.01, 0.03, 0.1)
    eval_fracs: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0)
    nll_se: float = 0.002
    vocab: int = 8192
    layers: tuple[int, int, int] = (2, 4, 2)  # head, mid, tail
    gsm8k_n: int = 300
    gsm8k_base: float = 0.30
    gsm8k_delta: float = 0.085
    with_tasks: bool = True
    partial: int = 1                   # runs left without DONE.json (their last evals missing)
    no_evals: int = 1                  # runs with a config but no evaluation yet
    failed: int = 0
    noise_seed: int = 0
    lr_schedule: str = "constant"      # the trajectories are read along the way, as a constant-LR run allows
    n_seqs: int = 32                   # eval sequences behind each NLL; 0 = no nll_per_seq (older runs)
    seq_spread: float = 0.5            # spread of sequence difficulty (shared by every run: the same eval set)
    extra: dict[str, Any] = field(default_factory=dict)


def _loop_gain(S: int, s_max: int, m: float) -> float:
    """FLOPs multiplier of a looped run evaluated at S loops: grows to m at S >= 6 (within s_max), then
    decays slowly past s_max (depth extrapolation), and is 1 at S=1 only in the limit of no sharing."""
    if S <= s_max:
        frac = min(1.0, math.log(S) / math.log(max(6, 2))) if S > 1 else 0.0
        return 1.0 + (m - 1.0) * (0.35 + 0.65 * frac)
    return 1.0 + (m - 1.0) * max(0.5, 1.0 - 0.05 * (S - s_max))


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def make_runs(spec: SyntheticSpec) -> list[dict[str, Any]]:
    """Run records: {'dir', 'config', 'evals', 'done', 'failed', 'tasks'} ready to be written."""
    rng = np.random.default_rng(spec.noise_seed)
    seq_rng = np.random.default_rng([spec.noise_seed, 1])  # separate stream: nll noise stays as it was
    n_seqs = int(spec.n_seqs)
    seq_eff = seq_rng.normal(0.0, spec.seq_spread, max(n_seqs, 0))
    if n_seqs > 1:
        seq_eff -= seq_eff.mean()

    def per_seq(nll: float) -> dict[str, Any]:
        """Per-sequence NLLs averaging exactly to ``nll``: shared sequence difficulty + this eval's own noise,
        scaled so that the paired s.e. of a difference matches the independent noise on ``nll``."""
        if n_seqs < 2:
            return {}
        eps = seq_rng.normal(0.0, spec.nll_se * math.sqrt(n_seqs), n_seqs)
        v = nll + seq_eff + (eps - eps.mean())
        return dict(nll_per_seq=[round(float(x), 6) for x in v], n_seqs=n_seqs,
                    nll_data_se=float(v.std(ddof=1) / math.sqrt(n_seqs)))

    h, mid, t = spec.layers
    L = h + mid + t
    es = (spec.s_max + 1) / 2
    runs = []
    for seed in spec.seeds:
      for C in spec.budgets:
        for N in isoflop_sizes(C, spec.size_factors):
            d = int(round(math.sqrt(N / (12 * L)) / 8) * 8) or 8
            emb = spec.vocab * d
            per_layer = N / L
            n_eff_loop = per_layer * (h + es * mid + t)
            deeper_layers = int(round(h + es * mid + t))
            n_deeper = per_layer * deeper_layers
            if True:
                group = f"n{N:.1e}-c{C:.0e}-s{spec.s_max}-seed{seed}"
                fams = {
                    "mdm": dict(role="baseline_same", n_ne=N, n_eff=N, layers=(0, 0, L), s_max=1, m=1.0),
                    "loopmdm": dict(role="looped", n_ne=N, n_eff=n_eff_loop, layers=(h, mid, t), s_max=spec.s_max,
                                    m=spec.multiplier),
                    "mdm_deeper": dict(role="baseline_deeper", n_ne=n_deeper, n_eff=n_deeper,
                                       layers=(0, 0, deeper_layers), s_max=1, m=spec.deeper_multiplier),
                }
                for fam, f in fams.items():
                    D_total = C / (6 * f["n_eff"])
                    slug = f"{fam}-n{N:.1e}-c{C:.0e}-seed{seed}".replace("+", "")
                    hsh = _hash(f"{spec.study}/{slug}/{spec.s_max}")
                    steps_total = 1000
                    evals = []
                    for frac in spec.eval_fracs:
                        D = D_total * frac
                        c = C * frac
                        step = int(round(steps_total * frac))
                        base_row = dict(step=step, tokens=D, flops_6N_nonembed=c,
                                        flops_6N_total=c * (f["n_eff"] + emb) / f["n_eff"],
                                        flops_exact=c * (f["n_eff"] + emb) / f["n_eff"] * 1.12,
                                        is_final=frac == 1.0)
                        loops = spec.loops_scan if fam == "loopmdm" else (1,)
                        for S in loops:
                            gain = _loop_gain(S, spec.s_max, f["m"]) if fam == "loopmdm" else f["m"]
                            # same-size baseline with gain x the tokens: exactly gain x the FLOPs
                            nll = float(law_loss(N, D * gain * f["n_eff"] / N)) + rng.normal(0, spec.nll_se)
                            evals.append(dict(base_row, eval_loops=S, exit_threshold=None, nll=nll,
                                              nll_bits=nll / math.log(2), ppl=math.exp(nll), nll_se=spec.nll_se,
                                              n_draws=8, mean_loops=float(S), **per_seq(nll)))
                        if fam == "loopmdm" and frac == 1.0:
                            fixed = float(law_loss(N, D * _loop_gain(spec.s_max, spec.s_max, f["m"]) * f["n_eff"] / N))
                            for thr in spec.exit_thresholds:
                                ml = spec.s_max * (1.0 - 3.0 * thr)
                                nll = fixed + 0.02 * thr + rng.normal(0, spec.nll_se)
                                evals.append(dict(base_row, eval_loops=spec.s_max, exit_threshold=thr, nll=nll,
                                                  nll_bits=nll / math.log(2), ppl=math.exp(nll), nll_se=spec.nll_se,
                                                  n_draws=8, mean_loops=ml, **per_seq(nll)))
                    hl, ml_, tl = f["layers"]
                    n_total = f["n_ne"] + emb
                    eff = f["n_eff"]  # non-embedding, at E[S] (as model.flops.ParamCounts.to_dict writes it)
                    config = {
                        "meta": {"study": spec.study, "slug": slug, "hash": hsh,
                                 "groups": [{"group": group, "role": f["role"]}],
                                 "axes": {"size": float(N), "budget": float(C), "family": fam},
                                 "params": {"embedding": emb, "nonembedding": float(f["n_ne"]),
                                            "total": float(n_total), "effective": float(eff)}},
                        "model": {"d_model": d, "n_heads": _heads(d), "n_head_layers": hl,
                                  "n_mid_layers": ml_, "n_tail_layers": tl, "s_max": f["s_max"],
                                  "loop_dist": "uniform" if fam == "loopmdm" else "fixed", "vocab_size": spec.vocab},
                        "data": {"seq_len": 256}, "batch": {"global_batch": 64},
                        "optim": {"schedule": spec.lr_schedule},
                        "eval": {"n_seqs": n_seqs, "n_draws": 8, "seed": 1234},
                        "budget": {"flops": float(C), "convention": "6N_nonembed"}, "seed": int(seed),
                    }
                    tasks = []
                    if spec.with_tasks and fam in ("mdm", "loopmdm") and C == max(spec.budgets):
                        trng = np.random.default_rng(int(_hash(group)[:8], 16))
                        u = trng.random(spec.gsm8k_n)  # shared problem difficulty: paired outcomes
                        for S in ((1,) if fam == "mdm" else (1, 4, spec.s_max)):
                            p = spec.gsm8k_base + (spec.gsm8k_delta * min(1.0, math.log(S) / math.log(spec.s_max))
                                                   if fam == "loopmdm" and S > 1 else 0.0)
                            ps = (u < p).astype(int).tolist()
                            tasks.append({"task": "gsm8k", "metric": "exact_match", "loops": S,
                                          "exit_threshold": None, "step": steps_total, "n": len(ps),
                                          "score": float(np.mean(ps)), "per_sample": ps,
                                          "run_hash": hsh, "eval_config_hash": _hash(f"gsm8k{S}")[:8]})
                    runs.append(dict(dir=f"{slug}-{hsh[:12]}", config=config, evals=evals, done=True, failed=False,
                                     tasks=tasks))
    # make a few runs partial / failed / not yet evaluated, deterministically (largest budgets first:
    # those are the ones still running in a real sweep)
    order = sorted(range(len(runs)), key=lambda i: -runs[i]["config"]["budget"]["flops"])
    k = 0
    for _ in range(spec.partial):
        r = runs[order[k]]; k += 1
        r["done"] = False
        r["evals"] = [e for e in r["evals"] if not e["is_final"]]
        r["tasks"] = []
    for _ in range(spec.failed):
        r = runs[order[k]]; k += 1
        r["done"] = False; r["failed"] = True
        r["evals"] = [e for e in r["evals"] if e["step"] <= 250]
        r["tasks"] = []
    for _ in range(spec.no_evals):
        r = runs[order[k]]; k += 1
        r["done"] = False; r["evals"] = []; r["tasks"] = []
    return runs


def write_study(study_dir: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write a run-directory tree in the documented format (docs/INTERFACES.md)."""
    spec = spec or SyntheticSpec()
    study_dir = Path(study_dir)
    for r in make_runs(spec):
        d = study_dir / records.RUNS_DIR / r["dir"]
        d.mkdir(parents=True, exist_ok=True)
        (d / records.CONFIG).write_text(yaml.safe_dump(r["config"], sort_keys=False))
        if r["evals"]:
            (d / records.EVALS).write_text("".join(json.dumps(e) + "\n" for e in r["evals"]))
        if r["done"]:
            records.atomic_write_text(d / records.DONE, json.dumps({"ok": True}))
        if r["failed"]:
            (d / records.FAILED).write_text(json.dumps({"error": "synthetic failure"}))
        if r["tasks"]:
            (d / records.EVALS_DIR).mkdir(exist_ok=True)
            for tk in r["tasks"]:
                (d / records.EVALS_DIR / f"{tk['task']}-{tk['eval_config_hash']}-l{tk['loops']}.json").write_text(json.dumps(tk))
    return study_dir


# ------------------------------------------------------------------ tidy tables without files (fast)
def frontier_pair_table(
    multiplier: float = 3.3, *, size_factors=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    budgets=(1e14, 3e14, 1e15, 3e15, 1e16, 3e16),
    nll_se: float = 0.002, noise: float = 0.002, seed: int = 0, eval_fracs=(0.25, 0.5, 0.75, 1.0),
    loops: int = 8, s_max: int = 8,
) -> pd.DataFrame:
    """A tidy table of two families exactly ``multiplier`` apart in FLOPs (every convention), with
    training trajectories, one comparison group per (size, budget)."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        for N in isoflop_sizes(C, size_factors):
            group = f"n{N:.1e}-c{C:.0e}"
            for fam, role, m in (("mdm", "baseline_same", 1.0), ("loopmdm", "looped", multiplier)):
                run = f"{fam}-{group}"
                for frac in eval_fracs:
                    c = C * frac
                    D = c / (6 * N)
                    nll = float(law_loss(N, D * m)) + rng.normal(0, noise)
                    rows.append(dict(study="pair", run=run, slug=run, group=group, role=role, family=fam,
                                     d_model=64, n_heads=1, n_head_layers=2, n_mid_layers=4, n_tail_layers=2,
                                     s_max=s_max if fam == "loopmdm" else 1, n_layers=8,
                                     params_embedding=1e5, params_nonembedding=N, params_total=N + 1e5,
                                     params_effective=N + 1e5, seq_len=256, global_batch=64, budget_flops=C,
                                     budget_convention="6N_nonembed", lr_schedule="constant",
                                     step=int(1000 * frac), tokens=D,
                                     flops_6N_nonembed=c, flops_6N_total=c * 1.1, flops_exact=c * 1.25,
                                     eval_loops=loops if fam == "loopmdm" else 1, exit_threshold=np.nan, nll=nll,
                                     nll_se=nll_se, mean_loops=float(loops if fam == "loopmdm" else 1),
                                     is_final=frac == 1.0, done=True, seed=0))
    return pd.DataFrame(rows)


def phi_points(phi: float, *, seed: int = 0, noise: float = 0.003, loops: float = 4.5,
               sizes=(2e5, 5e5, 1e6, 2e6, 5e6), tokens=(2e7, 6e7, 2e8), looped_sizes=(5e5, 1e6, 2e6),
               law: dict[str, float] = LAW) -> dict[str, np.ndarray]:
    """Points with a known effective-parameter ratio: plain runs (k = 1) on the law at every (size, tokens), looped
    runs (k = ``loops`` = E[S]) on the law at N (1 + phi (k - 1)); multiplicative log-normal noise of ``noise``
    (relative), one run per point. Arrays N, D, loss, loops, family (what `curves.fit_phi` takes)."""
    rng = np.random.default_rng(seed)
    rows = [(N, D, 1.0, "mdm") for N in sizes for D in tokens] + \
        [(N, D, float(loops), "loopmdm") for N in looped_sizes for D in tokens]
    N, D, k = (np.array([r[i] for r in rows], float) for i in range(3))
    loss = law_loss(N * (1 + phi * (k - 1)), D, law) * np.exp(rng.normal(0, noise, N.size))
    return dict(N=N, D=D, loss=loss, loops=k, family=np.array([r[3] for r in rows]))
