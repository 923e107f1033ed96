"""What a pre-registered control must show (the spec's ``control:`` section), checked when the spec loads (by
`study.plan.spec`, which turns a `PreregistrationError` into a ConfigError) and read again by the report from the
study's copy of the spec."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

import records

SPEC_KEY = "control"


class PreregistrationError(ValueError):
    """A bad ``control:`` entry; ``field`` names it (the spec loader turns this into a ConfigError)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Preregistration:
    """What counts, fixed before the study runs (the spec's ``control:`` section; these are its defaults)."""

    order: str = "parallel"  # the scorer's fill order the gate and criteria read
    gate_depth: int = 1
    gate_min_accuracy: float = 0.95
    from_depth: int = 3  # the criteria average the depths >= this one
    min_gain_points: float = 10.0
    min_nll_sensitivity: float = 0.02  # nats/token
    inert_within_points: float = 3.0
    width: int | None = None  # read only the comparison groups of this d_model (None: every width)
    registered: bool = True  # False: defaults used because the spec pre-registered nothing

    #: spec layout: section -> {yaml key: (field, type)}
    LAYOUT = {"order": ("order", str), "gate": {"depth": ("gate_depth", int), "min_accuracy": ("gate_min_accuracy", float)},
              "criteria": {"from_depth": ("from_depth", int), "min_gain_points": ("min_gain_points", float),
                           "min_nll_sensitivity": ("min_nll_sensitivity", float)},
              "inert": {"within_points": ("inert_within_points", float)}, "width": ("width", int)}

    @classmethod
    def from_spec(cls, raw: Any, orders: Sequence[str] | None = None) -> "Preregistration":
        """Parse and check a spec's ``control:`` mapping (None: the defaults, marked not registered); ``orders``:
        the scorer's fill orders, to check ``order`` against (the spec loader passes them)."""
        if raw is None:
            return cls(registered=False)
        if not isinstance(raw, dict):
            raise PreregistrationError(SPEC_KEY, "must be a mapping: {order, gate: {depth, min_accuracy}, criteria: "
                                                 "{from_depth, min_gain_points, min_nll_sensitivity}, inert: {within_points}, "
                                                 "width}")
        values: dict[str, Any] = {}
        for key, val in raw.items():
            shape = cls.LAYOUT.get(key)
            if shape is None:
                raise PreregistrationError(f"{SPEC_KEY}.{key}", f"unknown key; allowed: {', '.join(cls.LAYOUT)}")
            if isinstance(shape, tuple):
                values[shape[0]] = _typed(f"{SPEC_KEY}.{key}", val, shape[1])
                continue
            if not isinstance(val, dict):
                raise PreregistrationError(f"{SPEC_KEY}.{key}", f"must be a mapping with keys {', '.join(shape)}")
            for sub, v in val.items():
                if sub not in shape:
                    raise PreregistrationError(f"{SPEC_KEY}.{key}.{sub}", f"unknown key; allowed: {', '.join(shape)}")
                values[shape[sub][0]] = _typed(f"{SPEC_KEY}.{key}.{sub}", v, shape[sub][1])
        p = cls(**values)
        checks = [("order", orders is None or p.order in orders, f"one of {', '.join(orders or ())} (the scorer's "
                                                                   f"fill orders)"),
                  ("gate.depth", p.gate_depth >= 1, "a depth >= 1"),
                  ("gate.min_accuracy", 0 < p.gate_min_accuracy <= 1, "a fraction in (0, 1]"),
                  ("criteria.from_depth", p.from_depth >= 1, "a depth >= 1"),
                  ("criteria.min_gain_points", p.min_gain_points > 0, "points > 0"),
                  ("criteria.min_nll_sensitivity", p.min_nll_sensitivity > 0, "nats/token > 0"),
                  ("inert.within_points", p.inert_within_points > 0, "points > 0"),
                  ("width", p.width is None or p.width > 0, "a model width (d_model) > 0")]
        for name, ok, want in checks:
            if not ok:
                raise PreregistrationError(f"{SPEC_KEY}.{name}", f"got {getattr(p, _field_of(name))!r}; want {want}")
        return p


def _field_of(dotted: str) -> str:
    shape = Preregistration.LAYOUT[dotted.split(".")[0]]
    return shape[0] if isinstance(shape, tuple) else shape[dotted.split(".")[1]][0]


def _typed(where: str, v: Any, kind: type) -> Any:
    if kind is str:
        if not isinstance(v, str):
            raise PreregistrationError(where, f"got {v!r}; want a string")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
        raise PreregistrationError(where, f"got {v!r}; want {'an integer' if kind is int else 'a number'}")
    return kind(v)


def read_preregistration(study_dir: str | Path) -> Preregistration:
    """The ``control:`` section of the spec the study was run with (its copy in the study directory)."""
    path = Path(study_dir) / records.SPEC
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return Preregistration.from_spec((raw or {}).get(SPEC_KEY) if isinstance(raw, dict) else None)
