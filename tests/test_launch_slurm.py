"""study.launch: resources, snapshots, the preemption flag, and (marked slurm) a real job array on the
single-node SLURM from `bash scripts/slurm.sh start`, preempted and requeued mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers_jobs  # noqa: E402

import records
from study import launch
from study.launch import Job, ResourceError, ResourceSpec  # noqa: E402
from conftest import slurm_unusable, wait_for  # noqa: E402

# the toy job lives in tests/, which a job process cannot import: ship its code, not a reference
cloudpickle.register_pickle_by_value(helpers_jobs)


SLURM_SKIP = slurm_unusable()


def _key(i: int) -> str:
    return f"{i:04x}" + "c0ffee" * 6


# ---------------------------------------------------------------------------------------- resources
def test_resource_validation_names_field_and_fix() -> None:
    ResourceSpec().validate()
    ResourceSpec(executor="slurm", nodes=2, gpus_per_node=8, time_min=240).validate()
    cases = {"executor": dict(executor="k8s"), "nodes": dict(nodes=0), "time_min": dict(time_min=0),
             "gpus_per_node": dict(gpus_per_node=-1), "mem_gb": dict(mem_gb=0),
             "signal_delay_s": dict(time_min=1, signal_delay_s=90), "cpus_per_task": dict(cpus_per_task=0)}
    for field_name, kw in cases.items():
        with pytest.raises(ResourceError, match=rf"^resources\.{field_name}: ") as e:
            ResourceSpec(**kw).validate()  # type: ignore[arg-type]
        assert e.value.field == f"resources.{field_name}"
    with pytest.raises(ResourceError, match="nodes.*local executor runs on one node"):
        ResourceSpec(executor="local", nodes=2).validate()
    with pytest.raises(ResourceError, match="resources.walltime: unknown setting; valid ones are .*time_min"):
        ResourceSpec.from_dict({"walltime": 10})
    assert ResourceSpec.from_dict({"gpus_per_node": 4}).tasks_per_node == 4
    assert ResourceSpec(executor="auto").resolved_executor() == ("slurm" if shutil.which("sbatch") else "local")


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_SKIP is not None, reason=str(SLURM_SKIP))
def test_partition_checked_against_sinfo() -> None:
    ResourceSpec(executor="slurm", partition="debug").validate(check_cluster=True)
    with pytest.raises(ResourceError, match=r"resources\.partition: 'gpu-h100' does not exist.*available: debug"):
        ResourceSpec(executor="slurm", partition="gpu-h100").validate(check_cluster=True)


def test_sbatch_parameters(tmp_path: Path) -> None:
    """What reaches sbatch, without submitting: one task per GPU, requeue flag, comment, our setup lines."""
    if shutil.which("srun") is None:
        pytest.skip("SlurmExecutor needs srun on PATH")
    res = ResourceSpec(executor="slurm", partition="debug", nodes=2, gpus_per_node=4, mem_gb=1.5, time_min=30,
                       additional={"exclusive": True})
    ex = launch.make_executor(res, tmp_path, "toy", comment="loopmdm:s1", setup=["export A=1"])
    text = ex._make_submission_file_text("python -m x", "uid")
    for line in ("--ntasks-per-node=4", "--gpus-per-node=4", "--nodes=2", "--mem=1536MB", "--time=30",
                 "--requeue", "--exclusive", "--comment=loopmdm:s1", "--signal=USR2@120", "export A=1"):
        assert line in text, line


# ------------------------------------------------------------------------------------------ snapshot
def test_snapshot_is_complete_and_deduplicated(tmp_path: Path) -> None:
    snap = launch.make_snapshot(tmp_path)
    assert snap.parent == tmp_path.resolve() / ".snapshots"
    assert (snap / "study" / "launch" / "submit.py").read_bytes() == (Path(launch.__file__).parent / "submit.py").read_bytes()
    assert not list(snap.rglob("__pycache__"))
    assert json.loads((snap / "SNAPSHOT.json").read_text())["source"] == str(launch.project_root())
    assert launch.make_snapshot(tmp_path) == snap  # same code -> same snapshot
    assert [p.name for p in (tmp_path / ".snapshots").iterdir()] == [snap.name]  # no temp dirs left


def test_init_dist_env_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "SUBMITIT_EXECUTOR", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(k, raising=False)
    env = launch.init_dist_env_from_slurm()
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")} == \
        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    assert 0 < int(env["MASTER_PORT"]) < 65536


# ------------------------------------------------------------------------------------ preemption flag
def test_preemption_flag_sets_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)
    flag = launch.install_preemption_flag(grace_s=0)
    try:
        assert not flag.stop_requested()
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        assert flag.stop_requested() and flag.signals == ["SIGUSR2"]
    finally:
        flag.uninstall()
    assert (signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)) == before
    assert not flag.is_set()


def test_saying_stop_disarms_the_watchdog() -> None:
    """The watchdog is for a loop that never reaches a step boundary; once the loop polled the flag and was
    told to stop it is checkpointing, and a long checkpoint must not be cut short by the alarm."""
    flag = launch.PreemptionFlag().install(grace_s=30)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        pending = signal.alarm(0)
        signal.alarm(pending)  # peek at the watchdog and leave it armed
        assert flag.is_set() and pending > 0
        assert flag.stop_requested()
        assert signal.alarm(0) == 0
    finally:
        flag.uninstall()


def test_interactive_ctrl_c_twice_interrupts() -> None:
    before = signal.getsignal(signal.SIGINT)
    flag = launch.PreemptionFlag().install(interactive=True)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert flag.stop_requested() and flag.signals == ["SIGINT"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


def test_exit_after_bare_sigterm_does_not_requeue() -> None:
    """SIGTERM alone (scancel, or SLURM preempting with its own requeue): checkpoint, then just exit."""
    flag = launch.PreemptionFlag().install(grace_s=0)
    flag.term_wait_s = 0.2
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert flag.stop_requested()
        with pytest.raises(SystemExit) as e:
            flag.exit_for_requeue()
        assert e.value.code == 128 + signal.SIGTERM
    finally:
        flag.uninstall()


def test_resumable_run_checkpoint(tmp_path: Path) -> None:
    """Requeue resubmits the same object (the function resumes from its own checkpoints); without requeue
    submitit is told to stop; either way the run is marked preempted."""
    run = launch.ResumableRun(helpers_jobs.count, (str(tmp_path), 1), run_dir=str(tmp_path))
    delayed = run.checkpoint()
    assert delayed is not None and delayed.function is run
    assert json.loads((tmp_path / records.PREEMPTED).read_text())["by"] == "submitit"
    assert launch.ResumableRun(helpers_jobs.count, requeue=False).checkpoint() is None


# ----------------------------------------------------------------------------- debug and local runs
def test_debug_executor_in_process(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)
    jobs = [Job(_key(i), f"toy-{i}", helpers_jobs.count, (str(tmp_path / f"r{i}"), 3, 0.0)) for i in range(2)]
    subs = launch.submit(jobs, ResourceSpec(executor="debug"), tmp_path / "submitit")
    assert [s.job.result()["step"] for s in subs] == [3, 3]
    assert set(records.known_jobs(tmp_path, queue=None)) == {_key(0), _key(1)}
    assert not (tmp_path / ".snapshots").exists()  # in-process: nothing to snapshot
    assert (signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)) == before  # handlers given back


def test_local_executor_runs_from_snapshot(tmp_path: Path) -> None:
    rd = tmp_path / "runs" / "toy"
    (sub,) = launch.submit([Job(_key(7), "toy", helpers_jobs.count, (str(rd), 3, 0.01), run_dir=rd)],
                           ResourceSpec(executor="local", time_min=5), tmp_path / "submitit")
    state = sub.job.result()
    assert state["steps_done"] == [1, 2, 3] and state["value"] == helpers_jobs.expected_value(3)
    snap = next((tmp_path / ".snapshots").iterdir())
    start = state["starts"][0]
    assert start["store_file"] == str(snap / "records" / "__init__.py")
    assert start["cwd"] == os.getcwd() and (start["rank"], start["world"]) == ("0", "1")
    assert records.run_status(rd, queue=None).state == "done"


def test_local_executor_timeout_requeue(tmp_path: Path) -> None:
    """The local controller sends SIGUSR2 `signal_delay_s` before the time limit: our flag, checkpoint at
    the step boundary, submitit's requeue (exit 144), the controller restarts the job, which resumes."""
    rd = tmp_path / "runs" / "toy"
    res = ResourceSpec(executor="local", time_min=1, signal_delay_s=57)  # SIGUSR2 3 s after each start
    (sub,) = launch.submit([Job(_key(8), "toy", helpers_jobs.count, (str(rd), 30, 0.1), run_dir=rd)],
                           res, tmp_path / "submitit")
    state = sub.job.result()
    assert (state["step"], state["value"]) == (30, helpers_jobs.expected_value(30))
    assert state["steps_done"] == list(range(1, 31))
    assert len(state["starts"]) >= 2 and 0 < state["starts"][1]["at_step"] < 30
    assert "SIGUSR2" in records.last_preemption(rd)["signals"]


# ------------------------------------------------------------------------------------------ real SLURM
def _fake_preemption(job_id: str) -> None:
    """What submitit's `SlurmJob._interrupt()` does (SIGTERM, then the preemption signal), keeping scancel's
    output for the failure message.

    Slurm 22.05 quirk: while other tasks of the same array are still pending, `scancel --signal` on a
    running task fails with "Job can not be altered now" and retries for ~20 s (re-sending the signal each
    time), and `--signal TERM` kills the task outright; so only signal arrays without pending tasks."""
    for sig in ("SIGTERM", "USR2"):
        r = subprocess.run(["scancel", job_id, "--signal", sig], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"scancel --signal {sig} {job_id}: rc={r.returncode} {r.stderr}"


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_SKIP is not None, reason=str(SLURM_SKIP))
@pytest.mark.slow
def test_slurm_array_preempted_and_requeued(tmp_path: Path) -> None:
    """Four toy runs as one job array. Run 2 gets submitit's fake preemption (SIGTERM + SIGUSR2: our flag,
    checkpoint at the step boundary, submitit requeues); run 3 is requeued by the scheduler
    (`scontrol requeue`: SIGTERM only, SLURM requeues). Both resume and end exactly like their untouched
    twins (runs 0 and 1), no step done twice; the ledger knows every job; every attempt ran from the code
    snapshot."""
    t0 = time.monotonic()
    study_dir = tmp_path / "study"
    n_steps, step_s = 30, 0.2
    rds = [records.run_dir(study_dir, f"toy {i}", _key(i)) for i in range(4)]
    jobs = [Job(_key(i), f"toy-{i}", helpers_jobs.count, (str(rds[i]), n_steps, step_s), run_dir=rds[i])
            for i in range(4)]
    res = ResourceSpec(executor="slurm", partition="debug", cpus_per_task=1, mem_gb=0.25, time_min=10,
                       signal_delay_s=60)
    subs = launch.submit(jobs, res, study_dir / "submitit", check_cluster=True)
    array_id = subs[0].job_id.split("_")[0]
    assert [s.job_id for s in subs] == [f"{array_id}_{i}" for i in range(4)]

    def at_step(i: int, n: int) -> bool:
        st = helpers_jobs.read_state(rds[i])
        return bool(st and st["step"] >= n)

    def none_pending() -> bool:
        q = records.slurm_queue() or {}
        return not any(e.job_id.startswith(f"{array_id}_") and e.state == "PENDING" for e in q.values())

    try:
        wait_for(lambda: at_step(2, 5) and at_step(3, 5) and none_pending(), 90, "runs 2 and 3 to reach step 5")
        _fake_preemption(subs[2].job_id)
        subprocess.run(["scontrol", "requeue", subs[3].job_id], check=True, timeout=60)

        # while waiting to start again the jobs are still ours: status must say running, not resubmittable
        wait_for(lambda: (rds[2] / records.PREEMPTED).exists() and (rds[3] / records.PREEMPTED).exists(), 30,
              "PREEMPTED.json from runs 2 and 3")
        queue = wait_for(lambda: (q := records.slurm_queue()) and subs[2].job_id in q and
                      q[subs[2].job_id].state == "PENDING" and q, 30, "run 2 to be pending again")
        st = records.run_status(rds[2], queue=queue)
        assert st.state == "running" and "PENDING" in st.detail, st

        wait_for(lambda: all(s.job.done() for s in subs), 120, "all four jobs to finish", every=1.0)
    finally:
        for s in subs:
            if not s.job.done():
                s.job.cancel(check=False)
    results = [s.job.result() for s in subs]
    elapsed = time.monotonic() - t0

    for i, r in enumerate(results):
        assert (r["step"], r["value"]) == (n_steps, results[0]["value"]), f"run {i} ended elsewhere"
        assert r["steps_done"] == list(range(1, n_steps + 1)), f"run {i} redid or skipped a step"
        assert len(r["starts"]) == (2 if i >= 2 else 1), f"run {i}: {r['starts']}"
    for i in (2, 3):
        assert results[i]["starts"][1]["at_step"] >= 5
        pre = records.last_preemption(rds[i])
        assert pre["step"] >= 5 and "SIGTERM" in pre["signals"]
    assert "SIGUSR2" in records.last_preemption(rds[2])["signals"]

    assert [s.state for s in records.scan_study(study_dir)] == ["done"] * 4
    known = records.known_jobs(study_dir)
    assert {k: v.job_id for k, v in known.items()} == {s.key: s.job_id for s in subs}

    snaps = list((study_dir / ".snapshots").iterdir())
    assert len(snaps) == 1 and (snaps[0] / "study" / "launch" / "__init__.py").is_file()
    for r in results:
        for start in r["starts"]:
            assert start["store_file"] == str(snaps[0] / "records" / "__init__.py")
            assert start["launch_file"] == str(snaps[0] / "study" / "launch" / "__init__.py")
            assert start["cwd"] == os.getcwd()
    print(f"slurm array test: {elapsed:.1f} s")
