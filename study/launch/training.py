"""Training a study's planned runs: what is left to do, the run directories' configs and the plan on disk,
then one run after another here (local), or job arrays on SLURM (a study's evaluation stages:
`study.launch.evaluations`). A tuning stage's runs live in the study's tuning directory (`records.tune_dir`),
a study directory of its own: its own ledger and scheduler logs, so `status` reads both the same way; the
choice they lead to is recorded there (`write_tuned`).

Concurrency: a study's submission holds its submit lock (``records.SUBMIT_LOCK``) while it decides what to submit and
submits it (two ``submit`` commands started together: the second waits for none and says who holds it);
each run is trained under its own run lock, so two local sweeps of one spec share the work instead of
training every run twice — a run another process holds is skipped and counted.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import records
from study.plan import config as config_mod
from study.plan import tuning
from study.plan.spec import PlannedRun, Spec

from .preempt import EXIT_STOPPED, PREEMPT, install_preemption_flag
from .resources import ResourceSpec
from .submit import Job, after_ok, submit, wait_for


def run_point(config: dict, run_dir: str) -> dict:
    """The job function (module level so submitit pickles it by reference): train, or resume, one run."""
    from study.train import train  # here, not at the top: planning and status never load torch

    cfg = config_mod.from_dict(config)
    summary = train(cfg, run_dir, stop=PREEMPT.stop_requested)
    if summary.get("status") == "preempted" and PREEMPT.is_set() and os.environ.get("SUBMITIT_EXECUTOR"):
        PREEMPT.exit_for_requeue()
    return summary


def statuses(study_dir: Path, runs: list[PlannedRun]) -> dict[str, records.RunStatus | None]:
    """Each run's state, one scan per study directory the runs live in (the study, its tuning stage); a pending
    grid run (its LR waits for tuning) has none."""
    found: dict[tuple[Path, str], records.RunStatus] = {}
    for home in {r.home(study_dir) for r in runs if not r.pending}:
        if (home / records.RUNS_DIR).is_dir():
            found |= {(home, Path(s.run_dir).name): s for s in records.scan_study(home)}
    return {r.hash: found.get((r.home(study_dir), r.run_dir(study_dir).name)) for r in runs if not r.pending}


def to_submit(study_dir: Path, runs: list[PlannedRun], retry: bool) -> tuple[list[PlannedRun], dict[str, int]]:
    counts: dict[str, int] = {}
    todo = []
    found = statuses(study_dir, runs)
    for r in runs:
        if r.pending:  # no config yet: never written, never trained
            counts["awaiting tuning"] = counts.get("awaiting tuning", 0) + 1
            continue
        st = found.get(r.hash)
        state = st.state if st is not None else "pending"
        counts[state] = counts.get(state, 0) + 1
        if state in ("done", "running"):
            continue
        if state == "failed" and not retry:
            continue
        todo.append(r)
    return todo, counts


def write_run_configs(study_dir: Path, spec: Spec, runs: list[PlannedRun]) -> None:
    """config.yaml in every selected run dir (a run's identity on disk before it starts)."""
    for r in runs:
        d = r.run_dir(study_dir)
        if not (d / records.CONFIG).is_file():
            records.atomic_write_text(d / records.CONFIG, config_mod.dump_yaml(r.final_config(spec.study)))


def write_plan(study_dir: Path, spec: Spec, runs: list[PlannedRun], overrides: list[str] = (),
               tuning_runs: list[PlannedRun] = ()) -> None:
    """plan.json (and the spec as given): relative paths only, so a study directory can move. The tuning stage's
    runs come first; grid runs still waiting for their LR are listed by slug and tuning key only."""
    plan = {"study": spec.study, "description": spec.description,
            "spec": spec.path.name if spec.path else None, "overrides": list(overrides),
            "runs": [{"hash": r.hash, "slug": r.slug, "run_dir": str(r.run_dir(study_dir).relative_to(study_dir)),
                      "stage": "tune" if r.tune is not None else "grid", "groups": r.groups, "axes": r.axes,
                      "resource_class": r.resource_class} for r in [*tuning_runs, *runs] if not r.pending],
            "awaiting_tuning": [{"slug": r.slug, "key": r.lr_source.get("key")} for r in runs if r.pending]}
    records.atomic_write_json(study_dir / records.PLAN, plan)
    if spec.path is not None:
        records.atomic_write_text(study_dir / records.SPEC, spec.path.read_text())


def duration(seconds: float) -> str:
    """A remaining time a reader can trust: never '0 min' while something is left (seconds under 90 s)."""
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def write_tuned(study_dir: Path, spec: Spec, tuned: dict[str, tuning.Choice]) -> None:
    """The tuning stage's record: every key's choice and the grid it came from (re-derived from the tuning runs
    on every submission, so it always says what the runs say)."""
    records.atomic_write_json(records.tuned_path(study_dir), tuning.record(spec.study, spec.tune, tuned))


class Eta:
    """The sweep's progress and remaining time from the FLOPs done so far: runs differ in size by orders of
    magnitude, so the rate is FLOPs per second over the runs this command trained, applied to the FLOPs still
    planned, and the progress is a fraction of the planned FLOPs (a log file shows it as well as a terminal)."""

    def __init__(self, runs: list[PlannedRun]):
        self.total = self.left = sum(r.cfg.flops_per_step("exact") * r.cfg.steps for r in runs)
        self.done_flops, self.seconds = 0.0, 0.0
        self.plan(runs)

    def plan(self, runs: list[PlannedRun]) -> None:
        """What is left from now on (a sweep with a tuning stage knows its grid's runs only after tuning; their
        FLOPs do not depend on the LR, so the estimate covers both stages from the start)."""
        self.left = sum(r.cfg.flops_per_step("exact") * r.cfg.steps for r in runs)

    def record(self, run: PlannedRun, seconds: float, trained_fraction: float = 1.0) -> None:
        total = run.cfg.flops_per_step("exact") * run.cfg.steps
        self.left -= total
        self.done_flops += total * trained_fraction
        self.seconds += seconds

    def text(self) -> str:
        done = f"{100 * (1 - max(0.0, self.left) / self.total):.0f}% of the planned FLOPs done" if self.total > 0 else ""
        if self.done_flops <= 0 or self.seconds <= 0:
            return ", ".join(x for x in (done, "ETA after the first run") if x)
        left_s = max(0.0, self.left) / (self.done_flops / self.seconds)
        eta = f"ETA {duration(left_s)} for the rest ({time.strftime('%H:%M', time.localtime(time.time() + left_s))})"
        return ", ".join(x for x in (done, eta) if x)


def run_locally(study_dir: Path, spec: Spec, runs: list[PlannedRun], quiet: bool = False, eta: Eta | None = None,
                workers: int = 1) -> int:
    """The local executor: one run after another in this process, or with ``workers`` > 1 (``resources.
    local_workers``) in that many processes, each taking the next run from a shared queue with an equal share of
    the cores: small runs use a few cores better as separate processes than as threads of one. SIGINT/SIGTERM
    (Ctrl-C) reach the running runs' stop flags: they checkpoint at the next step boundary and the sweep exits with
    EXIT_STOPPED; a second Ctrl-C interrupts at once. A run that another process holds is skipped (it trains
    there)."""
    if workers > 1 and len(runs) > 1:
        return _run_in_workers(study_dir, spec, runs, quiet, min(workers, len(runs)))
    return _train_in_turn(study_dir, spec, enumerate(runs, 1), len(runs), quiet, eta or Eta(runs))


def _train_in_turn(study_dir: Path, spec: Spec, numbered, n: int, quiet: bool, eta: Eta | None, tag: str = "") -> int:
    """Train (i, run) pairs as they come; ``eta`` None: no time estimate (a worker sees only its own share)."""
    from study.train import train

    def say(text: str, stream=None) -> None:  # one write per line: workers share the terminal
        stream = stream or sys.stdout
        stream.write(f"{tag}{text}\n")
        stream.flush()

    flag = install_preemption_flag(interactive=True)
    failed = held = 0
    try:
        for i, r in numbered:
            if flag.is_set():
                break
            say(f"[{i}/{n}] {r.slug} ({r.role})" + (f"; {eta.text()}" if eta else ""))
            t0 = time.time()
            start_step = (records.tail_jsonl(r.run_dir(study_dir) / records.METRICS, 1) or [{}])[0].get("step") or 0
            try:
                summary = train(r.final_config(spec.study), r.run_dir(study_dir), stop=flag.stop_requested, quiet=quiet)
            except records.Locked as exc:
                held += 1
                say(f"    skipped: {exc}")
                continue
            except Exception as exc:  # recorded in the run's failure marker by train(); the sweep goes on
                failed += 1
                say(f"    failed: {exc}", sys.stderr)
                continue
            if summary.get("status") == "preempted":
                say(f"    stopped at step {summary['step']}: checkpointed; run the same command again to resume")
                return EXIT_STOPPED
            if summary.get("already_done"):  # another process finished it since this sweep looked
                say("    already done (by another process)")
                continue
            if eta:
                eta.record(r, time.time() - t0, 1.0 - min(start_step, r.cfg.steps) / max(r.cfg.steps, 1))
            finals = [f"S={e['eval_loops']}: {e['nll']:.3f}" for e in summary.get("final_eval", [])
                      if e.get("exit_threshold") is None]
            say(f"    done in {time.time() - t0:.0f} s" + (f"; val NLL {', '.join(finals)}" if finals else "")
                + (f" ({r.slug})" if tag else ""))
    finally:
        flag.uninstall()
    if flag.signals:
        return EXIT_STOPPED
    if held:
        say(f"{held} run(s) were being trained by another process; run `status` to follow them")
    return 1 if failed else 0


def _worker(study_dir: Path, spec: Spec, queue, n: int, quiet: bool, threads: int, tag: str) -> None:
    """One local worker process: ``threads`` torch threads (a run's own system.num_threads still wins), the
    runs the queue hands it until its end marker."""
    import torch
    torch.set_num_threads(threads)
    os.environ.pop("MASTER_PORT", None)  # one inherited from a run trained in the parent: each worker picks its own
    sys.exit(_train_in_turn(study_dir, spec, iter(queue.get, None), n, quiet, None, tag))


def _run_in_workers(study_dir: Path, spec: Spec, runs: list[PlannedRun], quiet: bool, workers: int) -> int:
    """``workers`` spawned processes share the runs through a queue; a stop signal here is passed on to them
    (each checkpoints its run); the result is the worst of theirs."""
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch thread pools
    queue = ctx.Queue()
    for item in enumerate(runs, 1):
        queue.put(item)
    for _ in range(workers):
        queue.put(None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"{workers} local workers, {threads} thread(s) each", flush=True)
    procs = [ctx.Process(target=_worker, args=(study_dir, spec, queue, len(runs), quiet, threads, f"(w{w}) "))
             for w in range(1, workers + 1)]
    for p in procs:
        p.start()
    stopped = False

    def forward(signum, _frame):
        nonlocal stopped
        stopped = True
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.join()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    codes = [p.exitcode for p in procs]
    if stopped or EXIT_STOPPED in codes:
        return EXIT_STOPPED
    return 0 if all(c == 0 for c in codes) else 1


def submit_slurm(study_dir: Path, spec: Spec, runs: list[PlannedRun], resources: ResourceSpec, wait: bool) -> int:
    """Job arrays for ``runs`` (all of one home: the study's grid, or its tuning stage, whose jobs go to the tuning
    directory's own ledger); fine-tuning runs wait for their parents (afterok)."""
    homes = {r.home(study_dir) for r in runs}
    if len(homes) != 1:
        raise ValueError("submit_slurm: submit the tuning stage and the grid separately")
    home = homes.pop()

    def job(r: PlannedRun, depends_on: str | None = None) -> Job:
        res = resources
        if r.resource_class:
            res = ResourceSpec.from_dict(dict(spec.resources) | spec.resource_classes[r.resource_class])
        if depends_on:  # a fine-tuning run starts only once its parent finished
            res = after_ok(res, depends_on)
        cfg = r.final_config(spec.study)
        return Job(key=r.hash[:12], name=r.slug, fn=run_point, args=(cfg.to_dict(), str(r.run_dir(study_dir))),
                   run_dir=r.run_dir(study_dir), resources=res)

    first = [r for r in runs if r.parent is None]
    submitted = submit([job(r) for r in first], resources, home / records.SUBMITIT_DIR, study_dir=home,
                       check_cluster=True) if first else []
    children = [r for r in runs if r.parent is not None]
    if children:
        known = queued_jobs(home)
        deps = []
        for r in children:
            if records.done_summary(r.parent.run_dir(study_dir)) is not None:
                deps.append(job(r))
            elif r.parent.hash[:12] in known:
                deps.append(job(r, known[r.parent.hash[:12]]))
            else:
                print(f"skipping {r.slug}: its parent {r.parent.slug} is neither done nor queued "
                      f"(it failed? resubmit with --retry)", file=sys.stderr)
        submitted += submit(deps, resources, home / records.SUBMITIT_DIR, study_dir=home, check_cluster=True)
    for s in submitted:
        print(f"submitted {s.name} as job {s.job_id}")
    return wait_for(submitted) if wait else 0


def queued_jobs(study_dir: Path) -> dict[str, str]:
    """Run-hash prefix -> SLURM job id of the study's training jobs still queued or running."""
    return {k: j.job_id for k, j in records.known_jobs(study_dir).items() if j.queued and j.job_id}


def submission_lock(study_dir: Path) -> records.RunLock:
    return records.RunLock(study_dir, what=f"a submission of study {study_dir.name}", name=records.SUBMIT_LOCK)
