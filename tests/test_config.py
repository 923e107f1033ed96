"""RunConfig: loading, overrides, validation messages, hashing, derived budgets and LR schedules."""

import pytest
import yaml

from model import flops
from model.config import ConfigError
from study.plan import config as C

BASE = {"model": {"vocab_size": 258, "d_model": 64, "n_heads": 4}, "data": {"seq_len": 64}}


def make(**sections):
    raw = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return C.from_dict(raw)


def test_hash_ignores_non_semantic_and_number_spelling():
    a = make(budget={"flops": 1e13})
    b = make(budget={"flops": "1e13"}, system={"log_every": 7, "zero_stage": 2}, eval={"batch_size": 3})
    assert a.hash == b.hash
    assert make(budget={"flops": 1e13}, optim={"lr": 1e-3}).hash != a.hash
    assert make(budget={"flops": 1e13}, seed=1).hash != a.hash
    # labels are not identity either
    assert make(budget={"flops": 1e13}, meta={"study": "x"}).hash == a.hash


def test_yaml_round_trip_keeps_identity(tmp_path):
    a = make(budget={"tokens": 100000}, eval={"loops": [1, 4]})
    p = tmp_path / "c.yaml"
    p.write_text(C.dump_yaml(a))
    b = C.load(p)
    assert b == a and b.hash == a.hash


def test_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(BASE))
    cfg = C.load(p, ["optim.lr=1e-3", "model.s_max=6", "eval.loops=[1,3,6]", "budget.steps=5"])
    assert cfg.optim.lr == 1e-3 and cfg.model.s_max == 6 and cfg.eval.loops == (1, 3, 6) and cfg.steps == 5
    with pytest.raises(ConfigError, match="key.sub=value"):
        C.apply_overrides({}, ["optim.lr"])


@pytest.mark.parametrize("sections, field, words", [
    ({"optim": {"lrr": 1}}, "optim.lrr", "Did you mean 'lr'"),
    ({"budget": {"flops": 10.0}}, "budget.flops", "too small for one optimizer step"),
    ({"budget": {"flops": 1e15, "steps": 3}}, "budget", "exactly one"),
    ({"batch": {"global_batch": 32, "micro_batch": 5}}, "batch.micro_batch", "divide"),
    ({"optim": {"schedule": "linear"}}, "optim.schedule", "allowed"),
    ({"data": {"seq_len": 512}}, "data.seq_len", "max_seq_len"),
    ({"eval": {"loops": [0, 2]}}, "eval.loops", ">= 1"),
    ({"kind": "sft"}, "init_from", "pretrained"),
    ({"model": {"n_mid_layers": 0}}, "model.n_mid_layers", "at least one layer"),
    ({"optim": {"lr": "fast"}}, "optim.lr", "expected float"),
])
def test_bad_inputs_name_the_field(sections, field, words):
    raw = {k: dict(v) for k, v in BASE.items()}
    raw["model"]["max_seq_len"] = 64
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError) as e:
        C.from_dict(raw)
    assert e.value.field == field and words in str(e.value)


def test_budget_conversions():
    cfg = make(budget={"flops": 1e14, "convention": "6N_nonembed"})
    per_step = cfg.tokens_per_step * flops.expected_train_flops_per_token(cfg.model, 64, "6N_nonembed")
    assert cfg.steps == int(1e14 // per_step)
    assert make(budget={"tokens": 64 * 32 * 10 + 5}).steps == 10
    assert make(budget={"steps": 7}).steps == 7


def test_lr_schedules_end_exactly_at_horizon():
    for sched in ("cosine", "wsd"):
        cfg = make(budget={"steps": 200}, optim={"schedule": sched, "warmup_steps": 10, "lr": 1.0, "min_lr_ratio": 0.1})
        lrs = [cfg.lr_at(s) for s in range(200)]
        assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
        assert lrs[-1] == pytest.approx(0.1)
        assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    cfg = make(budget={"steps": 200}, optim={"schedule": "wsd", "warmup_steps": 10, "lr": 1.0, "decay_fraction": 0.25})
    assert cfg.lr_at(149) == 1.0 and cfg.lr_at(150) < 1.0
    const = make(budget={"steps": 50}, optim={"warmup_steps": 5, "lr": 2.0})
    assert [const.lr_at(s) for s in (4, 5, 49)] == [2.0, 2.0, 2.0]


def test_eval_steps_geometric_and_end_at_last():
    cfg = make(budget={"steps": 1000}, eval={"points": 5})
    pts = cfg.eval_steps()
    assert pts[0] == 1 and pts[-1] == 1000 and len(pts) == 5 and pts == sorted(set(pts))
    assert make(budget={"steps": 3}, eval={"points": 8}).eval_steps()[-1] == 3


def test_default_eval_loops():
    assert make(model={"s_max": 6}).eval_loops == (1, 6)
    assert make(model={"s_max": 1, "loop_dist": "fixed"}).eval_loops == (1,)


def test_vocab_from_tokenizer():
    cfg = C.from_dict({"data": {"tokenizer": "byte", "seq_len": 32}, "budget": {"steps": 1}})
    assert cfg.model.vocab_size == 258 and cfg.model.mask_id == 257 and cfg.model.max_seq_len == 32


@pytest.mark.parametrize("data, says", [
    ({"corpus": "shakespeare"}, "has no given part"),
    ({"corpus": "eca:30:14:6", "seq_len": 91, "align": False}, "data.align=true and data.seq_len=91"),
    ({"corpus": "eca:30:14:6", "seq_len": 64, "align": True}, "data.seq_len=91"),
    ({"corpus": "eca:30:14:6", "seq_len": 91, "align": True, "given": "yes"}, "true/false"),
])
def test_data_given_needs_whole_records_of_an_iterated_corpus(data, says):
    raw = {"data": {"tokenizer": "byte", "seq_len": 64, "given": True, **data},
           "model": {"max_seq_len": 128}, "budget": {"steps": 1}}
    with pytest.raises(ConfigError, match="data.given") as err:
        C.from_dict(raw)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_data_given_enters_the_run_hash_only_when_set():
    base = {"data": {"corpus": "eca:30:14:6", "tokenizer": "byte", "seq_len": 91, "align": True},
            "model": {"max_seq_len": 128}, "budget": {"steps": 1}}
    plain, off = C.from_dict(base), C.from_dict({**base, "data": {**base["data"], "given": False}})
    on = C.from_dict({**base, "data": {**base["data"], "given": True}})
    assert plain.hash == off.hash != on.hash
