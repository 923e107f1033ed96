"""study.store: records survive crashes, names cannot escape, status reads the right state cheaply."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

import records
from records import KnownJob, QueueEntry


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_roundtrip(tmp_path: Path) -> None:
    records.atomic_write_text(tmp_path / "a.txt", "hello")
    records.atomic_write_json(tmp_path / "sub" / "b.json", {"x": 1, "p": Path("/q")})
    records.atomic_write_yaml(tmp_path / "c.yaml", {"model": {"d_model": 64}, "lr": 1e-3})
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert json.loads((tmp_path / "sub" / "b.json").read_text()) == {"x": 1, "p": "/q"}
    import yaml

    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == {"model": {"d_model": 64}, "lr": 1e-3}
    assert _entries(tmp_path) == ["a.txt", "c.yaml", "sub"]  # no temp files left behind


def test_crash_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "DONE.json"
    records.atomic_write_json(path, {"v": 1})
    # json.dump streams: the big list is written to the temp file before the bad object raises
    with pytest.raises(TypeError):
        records.atomic_write_json(path, {"v": 2, "big": list(range(50_000)), "bad": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert _entries(tmp_path) == ["DONE.json"]


def test_crash_before_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.txt"
    records.atomic_write_text(path, "old")

    def boom(*a: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(records.io.os, "replace", boom)
    with pytest.raises(OSError):
        records.atomic_write_text(path, "new" * 1000)
    assert path.read_text() == "old"
    assert _entries(tmp_path) == ["x.txt"]


def test_crash_on_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        records.atomic_write_json(tmp_path / "new.json", {"bad": object()})
    assert _entries(tmp_path) == []


# ------------------------------------------------------------------------------------------ JSON lines
def test_read_jsonl_skips_truncated_final_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for i in range(3):
        records.append_jsonl(path, {"step": i, "loss": 1.0 / (i + 1)})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # the writer died here
    assert [r["step"] for r in records.read_jsonl(path)] == [0, 1, 2]
    assert records.tail_jsonl(path, 1) == [{"step": 2, "loss": pytest.approx(1 / 3)}]
    # the next append starts a fresh line instead of extending the fragment
    records.append_jsonl(path, {"step": 3, "loss": 0.2})
    assert [r["step"] for r in records.read_jsonl(path)] == [0, 1, 2, 3]
    assert records.tail_jsonl(path, 2)[-1]["step"] == 3
    assert records.read_jsonl(tmp_path / "missing.jsonl") == []


def test_tail_reads_only_the_end_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    line = json.dumps({"step": 0, "pad": "x" * 200}) + "\n"
    with open(path, "w") as f:
        f.write(line * 200_000)  # ~40 MB
        f.write(json.dumps({"step": 99, "loss": 0.5}) + "\n")
    t = time.perf_counter()
    assert records.tail_jsonl(path, 1) == [{"step": 99, "loss": 0.5}]
    assert time.perf_counter() - t < 0.05
    assert [r["step"] for r in records.tail_jsonl(path, 3)] == [0, 0, 99]


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("raw", ["../../etc/passwd", "/abs/path", "..", ".hidden", "a/../../b", "~root",
                                 "x" * 500, "", "-rf", "Spaß über alles", "a\x00b", "..\\..\\win"])
def test_safe_slug_cannot_escape(tmp_path: Path, raw: str) -> None:
    slug = records.safe_slug(raw)
    assert slug and len(slug) <= records.SLUG_MAX
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")
    assert not slug.startswith((".", "-"))
    rd = records.run_dir(tmp_path, raw, "0123456789abcdef" * 4)
    assert rd.parent == (tmp_path / "runs").resolve()
    assert rd.name.endswith("-0123456789ab")


def test_run_dir_is_a_pure_function_of_identity(tmp_path: Path) -> None:
    h = "abcdef0123456789" * 4
    assert records.run_dir(tmp_path, "LoopMDM d=256 S=4", h) == records.run_dir(tmp_path, "LoopMDM d=256 S=4", h)
    assert records.run_dir(tmp_path, "LoopMDM d=256 S=4", h).name == "loopmdm-d-256-s-4-abcdef012345"
    assert records.run_key(records.run_dir(tmp_path, "x", h)) == h[:12]
    for bad in ("../x", "short", "zzzzzzzzzzzzzz", "/etc/passwd0123456789"):
        with pytest.raises(ValueError):
            records.run_dir(tmp_path, "x", bad)


# ------------------------------------------------------------------------------------------ status
H = "0123456789abcdef0123"


def _run(tmp_path: Path, name: str = "r") -> Path:
    rd = records.run_dir(tmp_path, name, H)
    rd.mkdir(parents=True)
    return rd


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_status_pending_running_done(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    assert records.run_status(rd, queue=None).state == "pending"
    records.heartbeat(rd, step=5)
    st = records.run_status(rd, queue=None)
    assert (st.state, st.step, st.job_id) == ("running", 5, None)
    for i in range(1, 8):
        records.append_jsonl(rd / records.METRICS, {"step": i * 10, "loss": 3.0 - i * 0.1})
    st = records.run_status(rd, queue=None)
    assert st.step == 70 and st.last_loss == pytest.approx(2.3)
    records.mark_done(rd, {"final_loss": 2.3})
    st = records.run_status(rd, queue=None)
    assert st.state == "done" and st.updated is not None
    assert json.loads((rd / records.DONE).read_text())["summary"] == {"final_loss": 2.3}


def test_status_failed_and_retry(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    records.heartbeat(rd)
    _age(rd / records.RUNNING, 10)
    records.mark_failed(rd, "loss went NaN", "Traceback ...")
    assert records.run_status(rd, queue=None).state == "failed"
    records.heartbeat(rd)  # a retry started: newer than the failure
    assert records.run_status(rd, queue=None).state == "running"


def test_status_stale_heartbeat(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    records.heartbeat(rd)
    _age(rd / records.RUNNING, records.STALE_AFTER_S + 1)
    assert records.run_status(rd, queue=None).state == "pending"  # died before any checkpoint
    (rd / records.CKPT_DIR / "step_00000010").mkdir(parents=True)
    st = records.run_status(rd, queue=None)
    assert st.state == "preempted" and "checkpoint" in st.detail


def test_status_dead_pid_on_this_host(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    (rd / records.CKPT_DIR / "step_00000010").mkdir(parents=True)
    records.atomic_write_json(rd / records.RUNNING, {"time": time.time(), "host": socket.gethostname(),
                                                 "pid": 2**22 + 12345, "job_id": None, "scheduler": "none"})
    st = records.run_status(rd, queue=None)
    assert (st.state, st.detail) == ("preempted", "process gone, has a checkpoint")


def test_status_preempted_marker_and_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = _run(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    records.heartbeat(rd, step=3)
    _age(rd / records.RUNNING, 5)
    records.mark_preempted(rd, step=3, signal="SIGUSR2")
    # still in the queue after PREEMPTED.json: the requeued attempt -> running (never resubmit)
    q = {"42": QueueEntry("42", "PENDING", "")}
    assert records.run_status(rd, queue=q).state == "running"
    # gone from the queue: preempted
    assert records.run_status(rd, queue={}).state == "preempted"
    # scheduler unknown: the clock says the heartbeat is older than the marker -> preempted
    assert records.run_status(rd, queue=None).state == "preempted"


def test_status_slurm_queue_beats_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = _run(tmp_path)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    records.heartbeat(rd, step=1)
    assert json.loads((rd / records.RUNNING).read_text())["job_id"] == "7_3"
    _age(rd / records.RUNNING, records.STALE_AFTER_S * 3)  # long eval, but the job is running
    assert records.run_status(rd, queue={"7_3": QueueEntry("7_3", "RUNNING", "")}).state == "running"
    records.heartbeat(rd, step=2)  # fresh, but its job was killed
    assert records.run_status(rd, queue={}).state == "pending"


# ------------------------------------------------------------------------------------------ ledger
def test_ledger_known_jobs_and_orphans(tmp_path: Path) -> None:
    keys = [f"{i:x}" * 16 for i in range(1, 5)]
    records.ledger_intent(tmp_path, "s1", keys[:2], "slurm")
    records.ledger_submitted(tmp_path, "s1", {keys[0]: "10_0", keys[1]: "10_1"})
    # s2 was interrupted between sbatch and the ledger: its array job is found by comment
    records.ledger_intent(tmp_path, "s2", keys[2:], "slurm")
    records.ledger_intent(tmp_path, "s3", keys[:1], "slurm")
    records.ledger_failed(tmp_path, "s3", "sbatch: error: invalid partition")
    queue = {"10_1": QueueEntry("10_1", "RUNNING", records.job_comment("s1")),
             "11_0": QueueEntry("11_0", "PENDING", records.job_comment("s2")),
             "11_1": QueueEntry("11_1", "PENDING", records.job_comment("s2"))}
    kj = records.known_jobs(tmp_path, queue=queue)
    assert kj[keys[0]].job_id == "10_0" and not kj[keys[0]].queued  # finished; s3 queued nothing
    assert kj[keys[1]].queue_state == "RUNNING"
    assert (kj[keys[2]].job_id, kj[keys[3]].job_id) == ("11_0", "11_1") and kj[keys[3]].queued
    unknown = records.known_jobs(tmp_path, queue=None)
    assert unknown[keys[1]].job_id == "10_1" and unknown[keys[2]].job_id is None


def test_queued_job_without_heartbeat_counts_as_running(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    known = {H[:12]: KnownJob(H, "s1", "slurm", "12_0", time.time(), "PENDING")}
    st = records.run_status(rd, queue={}, known=known)
    assert st.state == "running" and st.job_id == "12_0"


def _fake_study(root: Path, n: int) -> None:
    """n run dirs cycling through every state, with metrics logs of a realistic length."""
    metrics_line = json.dumps({"step": 0, "tokens": 0, "loops": 3, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0,
                               "tokens_per_s": 1e5, "mfu": 0.4, "wall_s": 1.0, "flops_exact": 1e15}) + "\n"
    for i in range(n):
        rd = records.run_dir(root, f"run {i}", f"{i:012x}ab")
        rd.mkdir(parents=True)
        with open(rd / records.METRICS, "w") as f:
            f.write(metrics_line * 200 + json.dumps({"step": i, "loss": 1.0}) + "\n")
        kind = i % 5
        if kind == 0:
            records.mark_done(rd, {"step": i})
        elif kind == 1:
            records.heartbeat(rd, step=i)
        elif kind == 2:
            records.mark_failed(rd, "boom")
        elif kind == 3:
            records.mark_preempted(rd, step=i)


def test_scan_study_hundreds(tmp_path: Path) -> None:
    _fake_study(tmp_path, 300)
    t = time.perf_counter()
    sts = records.scan_study(tmp_path, queue=None)
    dt = time.perf_counter() - t
    assert len(sts) == 300
    counts: dict[str, int] = {}
    for s in sts:
        counts[s.state] = counts.get(s.state, 0) + 1
        assert s.step == int(s.key[:12], 16)
    assert counts == {"done": 60, "running": 60, "failed": 60, "preempted": 60, "pending": 60}
    assert dt < 1.0, f"scan of 300 runs took {dt:.2f} s"
