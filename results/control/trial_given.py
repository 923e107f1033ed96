"""Sizing trial for the control's fourth setup (SIZING.md section 4), not the harness: the project's LoopMDM and
loss in a plain AdamW loop on fresh automaton records with row 0 given (never masked), scored per row in one
parallel fill on 200 held-out first rows. Usage (from the repository root, one JSON argument):

    PYTHONPATH=. python results/control/trial_given.py '{"rule": 30, "W": 14, "R": 8, "fam": "loop",
        "arch": [1, 1, 0], "steps": 2000, "bs": 16, "lr": 0.003, "seed": 0, "keep": true, "width": 64}'

``fam``: "loop" (LoopMDM, head/mid/tail = ``arch``, S ~ U{1..smax}) or an integer (a plain MDM of that many
layers). Prints one JSON line per (checkpoint, S): the % right per row 1..R-1 and their mean over rows >= 3."""
import json, random, sys, time, torch
from model import LoopMDM, ModelConfig
from model.diffusion import masked_diffusion_loss, infill
torch.set_num_threads(1)
a = json.loads(sys.argv[1])
rule, W, R, fam, steps, bs, lr, sd, keep_on, width = (a[k] for k in "rule W R fam steps bs lr seed keep width".split())
smax = a.get("smax", 7)
def hist(x):
    h = [x]
    for _ in range(R - 1):
        p = [0] + h[-1] + [0]; h.append([(rule >> (4 * p[i] + 2 * p[i + 1] + p[i + 2])) & 1 for i in range(W)])
    return h
def toks(x):
    g = [list(z) for z in zip(*hist(x))]
    return [48 + v for l in g for v in l + [-38]] + [256]
pos = [[i * (R + 1) + k for i in range(W)] for k in range(R)]
n = len(toks([0] * W))
torch.manual_seed(sd); rg = random.Random(sd)
arch = a.get("arch", [1, 1, 1])
if fam == "loop":
    cfg = ModelConfig(vocab_size=258, d_model=width, n_heads=4, n_head_layers=arch[0], n_mid_layers=arch[1], n_tail_layers=arch[2], s_max=smax, max_seq_len=n)
else:
    cfg = ModelConfig(vocab_size=258, d_model=width, n_heads=4, n_head_layers=0, n_mid_layers=fam, n_tail_layers=0, s_max=1, max_seq_len=n)
m = LoopMDM(cfg); o = torch.optim.AdamW(m.parameters(), lr=lr, betas=(.9, .98), eps=1e-8, weight_decay=0)
te = random.Random(99); X = [[te.getrandbits(1) for _ in range(W)] for _ in range(200)]
Y = torch.tensor([toks(x) for x in X]); M = Y.clone(); later = [q for p in pos[1:] for q in p]; M[:, later] = 257
keep = torch.zeros(bs, n, dtype=torch.bool); keep[:, pos[0]] = True
g = torch.Generator().manual_seed(sd); t0 = time.time()
def score(S):
    m.eval()
    with torch.no_grad():
        f = (infill(m, M, 1, loops=S) == Y).float()
    m.train(); return [round(100 * f[:, p].mean().item(), 1) for p in pos[1:]]
for s in range(1, steps + 1):
    for q in o.param_groups: q["lr"] = lr * min(1, s / 50)
    x = torch.tensor([toks([rg.getrandbits(1) for _ in range(W)]) for _ in range(bs)])
    l, _ = masked_diffusion_loss(m, x, loops=rg.randint(1, cfg.s_max), generator=g, keep=keep if keep_on else None)
    o.zero_grad(); l.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1); o.step()
    if s % (steps // 2) == 0:
        for S in ([1, 2, 4, smax, 2 * smax] if fam == "loop" else [1]):
            r = score(S); print(json.dumps(dict(a, step=s, S=S, loss=round(l.item(), 4), rows=r, ge3=round(sum(r[2:]) / len(r[2:]), 1), t=round(time.time() - t0))), flush=True)
