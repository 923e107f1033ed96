"""Clean failures everywhere a user can reach (issue 23): the nine cases that crashed, stalled or stayed silent,
then every command line given a read-only target, an unreachable hub and an empty input.

A clean failure is: exit code 2, ONE line on stderr (``error: <field>: <what to do>``), and nothing written
(the directory tree is compared before and after).

Read-only targets, as root: root writes through permission bits, so a ``chmod``-read-only directory is not
read-only to it. The command is then run with CAP_DAC_OVERRIDE dropped from its capability bounding set
(prctl(PR_CAPBSET_DROP) before exec), which makes root obey the permission bits like anyone else; where even
that is refused, those cases skip saying why. A path below a regular file is unwritable for everyone,
root included, and needs no trick.

An unreachable hub is simulated two ways, never by waiting on a real network: ``HF_HUB_OFFLINE=1``, and
``HF_ENDPOINT`` pointing at a closed local port (a blocked network: connections are refused at once).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import records
from study import cli
from study.plan import config as C
from test_train import corpus, tiny_cfg  # noqa: F401  (the module-scoped corpus fixture)

ROOT = Path(__file__).resolve().parents[1]
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BLOCKED_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1


# ------------------------------------------------------------------------------------------- helpers
def _env(**extra: str) -> dict:
    """A clean environment: no ranks, no hub settings inherited from other tests, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith(("HF_", "LOOPMDM_"))}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | extra


def _obey_permissions() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ARGS`` as a user would type it; as root, without the power to write through permissions."""
    pre = _obey_permissions if os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pre)


@pytest.fixture(scope="module")
def read_only_works(tmp_path_factory) -> None:
    """Skip (saying why) where not even a command run as root without CAP_DAC_OVERRIDE sees a read-only dir."""
    d = tmp_path_factory.mktemp("probe") / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        r = subprocess.run([sys.executable, "-c", f"import os, sys; sys.exit(os.access({str(d)!r}, os.W_OK))"],
                           capture_output=True, text=True, timeout=30,
                           preexec_fn=_obey_permissions if os.geteuid() == 0 else None)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run a command that obeys permission bits here: {exc}")
    finally:
        d.chmod(0o755)
    if r.returncode != 0:
        pytest.skip("a chmod-read-only directory is writable here even without CAP_DAC_OVERRIDE")


def tree(path: Path) -> dict[str, tuple]:
    """Every entry under ``path`` with its kind, size and modification time: equal trees, nothing written."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = (p.is_dir(), st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, one line on stderr, no traceback, mentioning each needle; returns the line."""
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def read_only(*paths: Path) -> None:
    for p in paths:
        for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
            q.chmod(q.stat().st_mode & ~0o222)


def writable(*paths: Path) -> None:
    for p in paths:
        for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
            q.chmod(q.stat().st_mode | 0o200)


def run_read_only(args: list[str], ro: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The command, with ``ro`` and everything below it read-only; nothing under ``cwd`` may change."""
    read_only(ro)
    before = tree(cwd)
    try:
        r = run_cli(args, cwd)
    finally:
        writable(ro)
    assert tree(cwd) == before, r.stderr
    return r


def write_spec(path: Path, base: dict, **extra) -> Path:
    path.write_text(yaml.safe_dump({"study": path.stem, "base": base, "resources": {"executor": "local"}} | extra))
    return path


def base_of(cfg: C.RunConfig) -> dict:
    raw = yaml.safe_load(C.dump_yaml(cfg))
    return {k: raw[k] for k in ("model", "data", "optim", "batch", "budget", "eval", "system")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """A tiny run stopped at step 25 of 30, with checkpoints at steps 10, 20 and 25 (copied by each test)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_cfg(corpus, tmp / "cache", **{"budget.steps": 30, "system.ckpt_every": 10, "system.keep_last": 3})
    from study.train import train

    n = {"calls": 0}

    def stop():
        n["calls"] += 1
        return n["calls"] > 25

    out = tmp / "run"
    assert train(cfg, out, stop=stop, quiet=True)["step"] == 25
    path = tmp / "config.yaml"
    path.write_text(C.dump_yaml(cfg))
    return path, out


def copy_run(trained, tmp_path: Path) -> tuple[Path, Path]:
    cfg_path, run = trained
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return cfg_path, out


SMALL = {"model": {"d_model": 32, "n_heads": 2, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 2},
         "data": {"corpus": "gsm8k-synth:tiny", "seq_len": 32}, "batch": {"global_batch": 4}, "budget": {"steps": 2},
         "eval": {"points": 1, "n_seqs": 4, "n_draws": 2}, "system": {"num_threads": 1}}


# =================================================================================== the nine cases
def test_1_a_huge_finite_nll_ends_the_run_failed_with_the_diverged_line(tmp_path, corpus, capsys):
    """lr=1e6 with the default warm-up: the NLL stays finite but exp(NLL) overflows the perplexity."""
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 30, "optim.warmup_steps": 100})
    (tmp_path / "c.yaml").write_text(C.dump_yaml(cfg))
    out = tmp_path / "run"
    rc = cli.run_main([str(tmp_path / "c.yaml"), "optim.lr=1e6", "--out", str(out), "--quiet"])
    one_line_error(rc, capsys.readouterr().err, "diverged", "lower optim.lr")
    assert not (out / records.DONE).exists() and "diverged" in records.read_json(out / records.FAILED)["reason"]


@pytest.mark.parametrize("hub_env, why", [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
                                          ({"HF_ENDPOINT": BLOCKED_HUB}, "unreachable")], ids=["offline", "blocked"])
@pytest.mark.parametrize("tokenizer", ["gpt2", "loopmdm-no-such-tokenizer"])
def test_2_a_hub_tokenizer_without_the_hub_is_said_once_at_once(tmp_path, hub_env, why, tokenizer):
    t0 = time.monotonic()
    r = run_cli(["study.run", f"data.tokenizer={tokenizer}", "--out", "run"], tmp_path,
                _env(HF_HOME=str(tmp_path / "hf"), **hub_env))
    took = time.monotonic() - t0
    one_line_error(r.returncode, r.stderr, "data.tokenizer", tokenizer, why, "gpt2-local")
    assert "Retrying" not in r.stdout + r.stderr and took < 15, (took, r.stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "submit"])
def test_3_the_dry_run_refuses_slurm_without_sbatch_as_the_submit_does(tmp_path, capsys, monkeypatch, dry):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("sbatch", "srun") else real(name, *a, **k))
    spec = write_spec(tmp_path / "s.yaml", SMALL, resources={"executor": "slurm"})
    rc = cli.sweep_main([str(spec), "--out", str(tmp_path / "out")] + (["--dry-run"] if dry else []))
    one_line_error(rc, capsys.readouterr().err, "resources.executor", "sbatch", "--executor local")
    assert not (tmp_path / "out").exists()


def test_study_eval_on_slurm_without_sbatch_is_one_line(trained, capsys, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("sbatch", "srun") else real(name, *a, **k))
    _, run = trained
    before = tree(run)
    rc = cli.eval_main([str(run), "--scan", "--allow-unfinished", "--executor", "slurm"])
    one_line_error(rc, capsys.readouterr().err, "executor", "sbatch")
    assert tree(run) == before


@pytest.mark.parametrize("finetune, field", [
    ({"only": "nothing-like-this-*"}, "finetune.only"),
    ({"roles": ["baseline_deeper"]}, "finetune.roles"),
])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "submit"])
def test_4_a_finetune_stage_that_selects_no_run_is_refused(tmp_path, capsys, finetune, field, dry):
    spec = write_spec(tmp_path / "f.yaml", SMALL,
                      finetune={"corpus": "gsm8k-synth:tiny", "budget": {"steps": 2}} | finetune)
    rc = cli.sweep_main([str(spec), "--out", str(tmp_path / "out"), "--no-report"] + (["--dry-run"] if dry else []))
    one_line_error(rc, capsys.readouterr().err, field, "d32-l1.1.1-s2-n2")  # names the runs it could select
    assert not (tmp_path / "out").exists()


def test_5_evaluating_a_failed_run_says_it_failed_and_why(tmp_path, capsys):
    run = tmp_path / "study" / "runs" / "d32-0123456789ab"
    records.atomic_write_text(run / records.CONFIG, C.dump_yaml(C.from_dict(SMALL)))
    records.mark_failed(run, "Diverged: loss became nan by step 7 (last S=2, lr=1e+06); lower optim.lr", "Traceback ...",
                        last_logged_step=5)
    before = tree(tmp_path)
    line = one_line_error(cli.eval_main([str(run), "--scan"]), capsys.readouterr().err, "FAILED", "loss became nan by step 7")
    assert "wait for it" not in line
    one_line_error(cli.eval_main([str(tmp_path / "study"), "--scan"]), capsys.readouterr().err, "1 failed")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("text, extra", [("C,loss\n", []), ("N,D,loss\n", ["--law", "parametric"]),
                                         ("C,loss\n-1,2.5\n0,2.4\n", ["--drop-bad-rows"])],
                         ids=["header-only", "header-only-parametric", "every-row-dropped"])
def test_6_a_fit_without_data_rows_is_an_error(tmp_path, capsys, text, extra):
    from analysis.fit import main as fit_main

    (tmp_path / "p.csv").write_text(text)
    before = tree(tmp_path)
    rc = fit_main([str(tmp_path / "p.csv"), "--law", "frontier", "--bootstrap", "10", "--out", str(tmp_path / "f.json"),
                   *extra])
    one_line_error(rc, capsys.readouterr().err, "p.csv", "no data rows")
    assert tree(tmp_path) == before


def _demo_study(dest: Path, n_runs: int = 2) -> Path:
    """A small copy of the committed demo study (finished runs with evaluations, no checkpoints)."""
    (dest / records.RUNS_DIR).mkdir(parents=True)
    for rd in records.list_run_dirs(ROOT / "results" / "demo")[:n_runs]:
        shutil.copytree(rd, dest / records.RUNS_DIR / rd.name)
    return dest


@pytest.mark.parametrize("case", ["sweep --out under a read-only parent", "sweep into a read-only study",
                                  "report on a read-only study"])
def test_7_read_only_places_are_one_line(tmp_path, read_only_works, case):
    spec = write_spec(tmp_path / "s.yaml", SMALL)
    ro = tmp_path / "ro"
    ro.mkdir()
    if case == "sweep --out under a read-only parent":
        args, field = ["study.sweep", str(spec), "--out", str(ro / "new"), "--no-report"], "--out"
    elif case == "sweep into a read-only study":
        (ro / "s").mkdir()
        args, field = ["study.sweep", str(spec), "--out", str(ro / "s"), "--no-report"], "--out"
    else:
        _demo_study(ro / "s")
        args, field = ["analysis.report", str(ro / "s"), "--bootstrap", "10", "--no-figures"], "study_dir"
    r = run_read_only(args, ro, tmp_path)
    one_line_error(r.returncode, r.stderr, field, "not writable", str(ro))


def test_8_a_checkpoint_without_its_manifest_is_incomplete_and_said(trained, tmp_path, capsys):
    cfg_path, out = copy_run(trained, tmp_path)
    newest = records.latest_checkpoint(out)
    assert newest.name == "step_00000025"
    (newest / records.MANIFEST).unlink()
    assert records.verify_checkpoint(newest) is not None
    assert cli.run_main([str(cfg_path), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "step_00000025" in said and records.MANIFEST in said and "resuming from step 20" in said, said


@pytest.mark.parametrize("args", ["--scan --executor local", "--scan --time-min 120", "--scan --gpus-per-node 1",
                                  "--scan --allow-unfinished", "--scan --quiet"])
def test_9_an_evaluate_stage_refuses_every_sweep_owned_flag(tmp_path, capsys, args):
    spec = write_spec(tmp_path / "e.yaml", SMALL, evaluate=[{"runs": "all", "args": args}])
    rc = cli.sweep_main([str(spec), "--dry-run", "--out", str(tmp_path / "out")])
    one_line_error(rc, capsys.readouterr().err, "evaluate[0].args", args.split()[1], "belongs to the sweep")


# ============================================================================================= also
def test_quiet_still_shows_the_checkpoint_fallback(trained, tmp_path, capsys):
    cfg_path, out = copy_run(trained, tmp_path)
    newest = records.latest_checkpoint(out)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert cli.run_main([str(cfg_path), "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "step_00000025 is damaged" in text and "resuming from step 20" in text, text
    assert "loss" not in text  # progress stays quiet


def test_a_temp_file_a_kill_9_left_is_gone_once_the_run_finishes(trained, tmp_path):
    cfg_path, out = copy_run(trained, tmp_path)
    (out / f".{records.RUNNING}.k9x2a1b3.tmp").write_text('{"pid": 1')  # killed between mkstemp and rename
    assert cli.run_main([str(cfg_path), "--out", str(out), "--quiet"]) == 0
    assert (out / records.DONE).is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("override, field", [("model.n_heads=true", "model.n_heads"), ("budget.steps=true", "budget.steps"),
                                             ("optim.lr=false", "optim.lr"), ("eval.loops=[1,true]", "eval.loops")])
def test_a_boolean_where_a_number_belongs_is_named_as_such(capsys, override, field):
    line = one_line_error(cli.run_main([override, "--print-config"]), capsys.readouterr().err, field, "boolean")
    assert ">= 1" not in line


def test_fit_names_only_the_columns_the_file_has(tmp_path, capsys):
    from analysis.fit import main as fit_main

    (tmp_path / "p.csv").write_text("N,D,loss\n1e6,1e9,3.0\n-1e6,1e9,2.9\n1e7,1e10,2.5\n1e8,1e10,2.2\n")
    line = one_line_error(fit_main([str(tmp_path / "p.csv"), "--bootstrap", "10"]), capsys.readouterr().err,
                          "N is missing, infinite or not > 0: rows 2")
    assert "C is" not in line


@pytest.mark.parametrize("verb", [[], ["report"]])
def test_an_empty_spec_does_not_suggest_leaving_it_out(tmp_path, capsys, verb):
    (tmp_path / "s.yaml").write_text("")
    dry = [] if verb else ["--dry-run"]  # report has no --dry-run (each verb takes only its own options)
    line = one_line_error(cli.sweep_main([*verb, str(tmp_path / "s.yaml"), *dry]), capsys.readouterr().err,
                          "s.yaml", "the file is empty")
    assert "no file at all" not in line


# ====================================================================== beyond the list: read-only targets
@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file: every path below it is unwritable for everyone, root included."""
    f = tmp_path / "a-file"
    f.write_text("")
    return f


def _under_file_cases(tmp_path: Path, blocker: Path, trained) -> dict:
    cfg_path, run = trained
    (tmp_path / "p.csv").write_text("C,loss\n1e10,3.0\n1e11,2.8\n1e12,2.6\n1e13,2.5\n")
    (tmp_path / "tiny.txt").write_text("to be or not to be " * 200)
    return {  # entry point -> (its main, argv, the option or field the one line must name)
        "study.sweep --dry-run": (cli.sweep_main, [str(write_spec(tmp_path / "s.yaml", SMALL)), "--dry-run", "--out",
                                                   str(blocker / "study")], "--out"),
        "study.sweep report": (cli.sweep_main, ["report", str(tmp_path / "s.yaml"), "--out", str(blocker / "study")],
                               "--out"),
        "study.run": (cli.run_main, [str(cfg_path), "--out", str(blocker / "run")], "--out"),
        "study.sft": (cli.sft_main, [str(run), "gsm8k-synth:tiny", "--steps", "2", "--out", str(blocker / "sft")],
                      "--out"),
        "study.data prepare": (cli.data_main, ["prepare", str(tmp_path / "tiny.txt"), "--cache-dir",
                                               str(blocker / "cache")], "data.cache_dir"),
        "analysis.fit --out": ("analysis.fit", [str(tmp_path / "p.csv"), "--law", "frontier", "--out",
                                                str(blocker / "fit.json")], "--out"),
        "study.lm_eval_cli --output_path": ("study.cli.lm_eval", ["run", "--model", "loopmdm", "--model_args",
                                                                 f"run={run}", "--tasks", "gsm8k-synth:tiny",
                                                                 "--output_path", str(blocker / "out")],
                                           "--output_path"),
    }


@pytest.mark.parametrize("case", ["study.sweep --dry-run", "study.sweep report", "study.run", "study.sft",
                                  "study.data prepare", "analysis.fit --out", "study.lm_eval_cli --output_path"])
def test_a_target_below_a_file_is_one_line_and_nothing_is_written(tmp_path, blocker, trained, capsys, monkeypatch,
                                                                  case):
    import importlib

    main, argv, field = _under_file_cases(tmp_path, blocker, trained)[case]
    before = tree(tmp_path)
    if isinstance(main, str):
        main = importlib.import_module(main).main
    if case.startswith("study.lm_eval_cli"):  # lm-eval's own command line reads sys.argv
        monkeypatch.setattr(sys, "argv", ["lm_eval", *argv])
        rc = main()
    else:
        rc = main(argv)
    one_line_error(rc, capsys.readouterr().err, field, f"{blocker} is a file")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("case", ["study.run --out FILE", "study.sweep --out FILE", "analysis.fit --out DIR"])
def test_a_target_of_the_wrong_kind_is_one_line(tmp_path, blocker, trained, capsys, case):
    from analysis.fit import main as fit_main

    cfg_path, _ = trained
    (tmp_path / "p.csv").write_text("C,loss\n1e10,3.0\n1e11,2.8\n1e12,2.6\n1e13,2.5\n")
    main, argv, words = {
        "study.run --out FILE": (cli.run_main, [str(cfg_path), "--out", str(blocker)], "is a file, not a directory"),
        "study.sweep --out FILE": (cli.sweep_main, [str(write_spec(tmp_path / "s.yaml", SMALL)), "--out", str(blocker)],
                                   "is a file, not a directory"),
        "analysis.fit --out DIR": (fit_main, [str(tmp_path / "p.csv"), "--law", "frontier", "--out", str(tmp_path)],
                                   "is a directory, not a file"),
    }[case]
    before = tree(tmp_path)
    one_line_error(main(argv), capsys.readouterr().err, words)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("case", ["study.sweep collect", "analysis.collect", "study.eval"])
def test_a_read_only_study_or_run_is_one_line_and_untouched(tmp_path, read_only_works, trained, case):
    study = _demo_study(tmp_path / "s")
    spec = write_spec(tmp_path / "s.yaml", SMALL)
    args, field = {"study.sweep collect": (["study.sweep", "collect", str(spec), "--out", str(study)], "--out"),
                   "analysis.collect": (["analysis.collect", str(study)], "study_dir"),
                   "study.eval": (["study.eval", str(tmp_path / "run"), "--scan", "--allow-unfinished"], "target")}[case]
    if case == "study.eval":
        copy_run(trained, tmp_path)
    r = run_read_only(args, tmp_path, tmp_path)
    one_line_error(r.returncode, r.stderr, field, "not writable")


@pytest.mark.parametrize("args", [["study.sweep", "status", "SPEC", "--out", "STUDY"], ["analysis.compare", "STUDY", "STUDY"]],
                         ids=["sweep status", "compare"])
def test_commands_that_only_read_work_on_a_read_only_study(tmp_path, read_only_works, args):
    study = _demo_study(tmp_path / "s")
    spec = write_spec(tmp_path / "s.yaml", SMALL)
    r = run_read_only([{"SPEC": str(spec), "STUDY": str(study)}.get(a, a) for a in args], tmp_path, tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


# ===================================================================== beyond the list: an unreachable hub
@pytest.fixture
def no_hub(monkeypatch):
    """This process sees a blocked network: the hub's endpoint refuses connections, nothing says offline."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", BLOCKED_HUB)


@pytest.mark.parametrize("case", ["study.sweep --dry-run", "study.data prepare (tokenizer)", "study.data prepare (corpus)",
                                  "study.run (corpus)", "study.sft (corpus)"])
def test_every_command_says_an_unreachable_hub_once_at_once(tmp_path, trained, no_hub, capsys, case):
    cfg_path, run = trained
    (tmp_path / "tiny.txt").write_text("to be or not to be " * 200)
    hub_base = SMALL | {"data": SMALL["data"] | {"tokenizer": "loopmdm-no-such-tokenizer"}}
    main, argv, field = {
        "study.sweep --dry-run": (cli.sweep_main, [str(write_spec(tmp_path / "s.yaml", hub_base)), "--dry-run"],
                                  "data.tokenizer"),
        "study.data prepare (tokenizer)": (cli.data_main, ["prepare", str(tmp_path / "tiny.txt"), "--tokenizer",
                                                           "loopmdm-no-such-tokenizer", "--cache-dir",
                                                           str(tmp_path / "cache")], "data.tokenizer"),
        "study.data prepare (corpus)": (cli.data_main, ["prepare", "hf:loopmdm/no-such-corpus", "--cache-dir",
                                                        str(tmp_path / "cache")], "data.corpus"),
        "study.run (corpus)": (cli.run_main, [str(cfg_path), "data.corpus=hf:loopmdm/no-such-corpus", "--out",
                                              str(tmp_path / "run")], "data.corpus"),
        "study.sft (corpus)": (cli.sft_main, [str(run), "hf:loopmdm/no-such-corpus", "--steps", "2", "--out",
                                              str(tmp_path / "sft")], "data.corpus"),
    }[case]
    before = tree(tmp_path)
    t0 = time.monotonic()
    rc = main(argv)
    took = time.monotonic() - t0
    out = capsys.readouterr()
    one_line_error(rc, out.err, field, "unreachable")
    assert "Retrying" not in out.out + out.err and took < 20, took
    assert tree(tmp_path) == before


def test_an_offline_hub_tokenizer_loads_from_the_local_cache(tmp_path):
    """HF_HUB_OFFLINE=1 with the tokenizer cached (as on a compute node after a download on the login node)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[MASK]": 1, "</s>": 2, "to": 3, "be": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    snap = tmp_path / "hf" / "hub" / "models--loopmdm--tiny-tok" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    tok.save(str(snap / "tokenizer.json"))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": BLOCKED_HUB}):
        r = run_cli(["study.run", "data.tokenizer=loopmdm/tiny-tok", "--print-config"], tmp_path,
                    _env(HF_HOME=str(tmp_path / "hf"), **env))
        assert r.returncode == 0 and "vocab_size: 5" in r.stdout, r.stderr  # [MASK] and </s> are its own


@pytest.mark.slow
@pytest.mark.parametrize("command", ["study.eval", "study.lm_eval_cli"])
def test_an_lm_eval_task_from_an_unreachable_hub_is_one_line_without_retries(tmp_path, trained, command):
    _, run = trained
    shutil.copytree(run, tmp_path / "run")
    records.mark_done(tmp_path / "run", {"config_hash": "-", "step": 25})
    args = {"study.eval": ["study.eval", str(tmp_path / "run"), "--tasks", "hellaswag", "--limit", "2"],
            "study.lm_eval_cli": ["study.lm_eval_cli", "run", "--model", "loopmdm", "--model_args",
                                  f"run={tmp_path / 'run'}", "--tasks", "hellaswag", "--limit", "2"]}[command]
    t0 = time.monotonic()
    r = run_cli(args, tmp_path, _env(HF_ENDPOINT=BLOCKED_HUB, HF_HOME=str(tmp_path / "hf")), timeout=300)
    took = time.monotonic() - t0
    assert "Retrying" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("error: tasks:") and "unreachable" in last, r.stderr[-2000:]
    assert took < 120, took


# ======================================================================= beyond the list: an empty input
def _empty_cases(tmp_path: Path) -> dict:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "no-runs" / records.RUNS_DIR).mkdir(parents=True)
    (tmp_path / "bare").mkdir()
    return {  # entry point -> (its main, argv, what the one line must say)
        "study.sweep: empty spec": (cli.sweep_main, [str(tmp_path / "empty.yaml")], "the file is empty"),
        "study.run: empty config": (cli.run_main, [str(tmp_path / "empty.yaml")], "the file is empty"),
        "study.sft: empty parent": (cli.sft_main, [str(tmp_path / "bare"), "gsm8k-synth:tiny", "--steps", "2"],
                                    "not a run directory"),
        "study.eval: study without runs": (cli.eval_main, [str(tmp_path / "no-runs"), "--scan"], "no finished run"),
        "study.eval: empty directory": (cli.eval_main, [str(tmp_path / "bare"), "--scan"], "neither a run directory"),
        "study.data: empty corpus": (cli.data_main, ["prepare", str(tmp_path / "empty.txt"), "--cache-dir",
                                                     str(tmp_path / "cache")], "is empty"),
        "study.data: empty spec": (cli.data_main, ["prepare", str(tmp_path / "empty.yaml")], "the file is empty"),
        "analysis.report: study without runs": ("analysis.report", [str(tmp_path / "no-runs")], "nothing to report"),
        "analysis.collect: study without runs": ("analysis.collect", [str(tmp_path / "no-runs")], "nothing to collect"),
        "analysis.fit: empty file": ("analysis.fit", [str(tmp_path / "empty.csv")], "cannot read"),
        "analysis.compare: studies without runs": ("analysis.compare", [str(tmp_path / "no-runs")] * 2,
                                                   "share no finished run"),
    }


@pytest.mark.parametrize("case", ["study.sweep: empty spec", "study.run: empty config", "study.sft: empty parent",
                                  "study.eval: study without runs", "study.eval: empty directory",
                                  "study.data: empty corpus", "study.data: empty spec",
                                  "analysis.report: study without runs", "analysis.collect: study without runs",
                                  "analysis.fit: empty file", "analysis.compare: studies without runs"])
def test_an_empty_input_is_one_line_and_nothing_is_written(tmp_path, capsys, case):
    import importlib

    main, argv, words = _empty_cases(tmp_path)[case]
    main = importlib.import_module(main).main if isinstance(main, str) else main
    before = tree(tmp_path)
    one_line_error(main(argv), capsys.readouterr().err, words)
    assert tree(tmp_path) == before
