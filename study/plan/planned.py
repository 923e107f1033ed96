"""A planned run: a resolved, hashed RunConfig with what the plan knows about it (its comparison groups, its axes,
its resource class, a fine-tuning run's parent, a tuning run's key, where its LR came from) and where it lives in
the study directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import records
from model import flops
from study.plan import config as config_mod


@dataclass
class PlannedRun:
    cfg: config_mod.RunConfig
    slug: str
    groups: list[dict] = field(default_factory=list)
    axes: dict = field(default_factory=dict)
    resource_class: str | None = None
    parent: "PlannedRun | None" = None  # a fine-tuning run's pretrained parent
    tune: dict | None = None  # a tuning run: {key, family, width, lr, warmup_steps} (study.plan.tuning)
    lr_source: dict | None = None  # where the LR came from: {source: spec | scaling.lr | tune | finetune, ...}

    @property
    def hash(self) -> str:
        return self.cfg.hash

    @property
    def role(self) -> str:
        return ",".join(sorted({g["role"] for g in self.groups})) or "single"

    @property
    def pending(self) -> bool:
        """A grid run whose LR waits for the tuning stage: its config, and so its hash and directory, are not
        known yet (the config holds a placeholder); nothing may write or train it."""
        own = (self.lr_source or {}).get("status") == "pending"
        return own or (self.parent is not None and self.parent.pending)

    def home(self, study_dir: Path) -> Path:
        """The study directory the run belongs to: the study, or the tuning stage's own (records.tune_dir)."""
        return records.tune_dir(study_dir) if self.tune is not None else Path(study_dir)

    def run_dir(self, study_dir: Path) -> Path:
        return records.run_dir(self.home(study_dir), self.slug, self.hash)

    def final_config(self, study: str) -> config_mod.RunConfig:
        if self.pending:
            raise RuntimeError(f"{self.slug}: its LR waits for the tuning stage, so it has no config yet")
        meta = {"study": study, "slug": self.slug, "hash": self.hash, "groups": self.groups, "axes": self.axes,
                "resource_class": self.resource_class, "steps": self.cfg.steps, "stage": self.cfg.kind,
                "params": flops.param_counts(self.cfg.model).to_dict(self.cfg.model.expected_loops)}
        if self.tune is not None:
            meta["tune"] = dict(self.tune)
        if self.lr_source is not None:
            meta["lr"] = dict(self.lr_source)
        return self.cfg.replace(meta=meta)
