"""Everything a study keeps on disk, in one torch-free package: plan, train, evaluate and analysis read and
write run directories only through it (docs/INTERFACES.md describes the files).

    records.io       atomic writes, JSON-lines logs (append, read with torn-line counts, cut back to a step)
    records.rundir   a run's names and paths, markers, checkpoints (naming, listing, manifest, verification)
    records.studydir the names of the study directory around runs/ (plan, ledger, evaluation jobs, tuning, report)
    records.lock     exclusive ownership of a run / a study submission by a live process
    records.ledger   the submissions ledger and the SLURM queue
    records.status   a run's state from its files and the queue
"""

from .io import (Records, append_jsonl, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text,
                 atomic_write_yaml, iter_jsonl, read_json, read_jsonl, read_records, remove_stray_temp_files, tail_jsonl,
                 truncate_jsonl, unwritable)
from .ledger import (LEDGER, KnownJob, QueueEntry, job_comment, known_jobs, ledger_failed, ledger_intent,
                     ledger_submitted, new_submission_id, slurm_queue)
from .lock import Locked, RunLock, lock_holder
from .rundir import (CKPT_DIR, CKPT_META, CONFIG, DONE, EVALS, EVALS_DIR, FAILED, LOOP_DIAG, MANIFEST, METRICS,
                     PREEMPTED, RUNNING, RUNS_DIR, SLUG_MAX, SYSTEM, TENSORBOARD_DIR, WANDB_DIR, WANDB_RUN_ID,
                     attention_path, ckpt_meta, ckpt_name, ckpt_root, ckpt_step, ckpt_tmp, clean_partial_checkpoints,
                     complete_checkpoints,
                     cut_logs_to_step, done_summary, has_checkpoint, heartbeat, is_task_eval_file, job_context,
                     last_preemption, latest_checkpoint, list_run_dirs, mark_done, mark_failed, mark_preempted,
                     read_config, read_evals, read_loop_diagnostics, recorded_hash, run_dir, run_key, safe_slug,
                     study_of, task_eval_path, tensorboard_dir, verify_checkpoint, wandb_dir, write_manifest)
from .status import STALE_AFTER_S, RunStatus, run_status, scan_study
from .studydir import (CONTROL_DIR, EVAL_JOBS_DIR, FIGURES_DIR, FITS, PLAN, REPORT, RUNS_TABLE, SNAPSHOTS_DIR, SPEC, SUBMIT_LOCK,
                       SUBMITIT_DIR, TUNE_DIR, TUNED, control_dir, eval_jobs_dir, eval_marker, tune_dir, tuned_path)

__all__ = [n for n in dir() if not n.startswith("_")]
