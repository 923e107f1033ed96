"""The layout's rules, checked on the code itself (docs/DESIGN.md, "Layers"): imports only point down the declared
layers — function-local imports included — and never in a circle; nothing imports the command lines; no private
name crosses a module boundary; no module grows past 450 lines; the study directory's and the run directory's
file names are spelled in records/ only; planning a spec with evaluation stages loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "records", "study", "analysis")

#: the layers, bottom first: a module may import from a lower layer, or from its own unit (acyclically), and
#: from nothing else — two units on one layer never import each other. A unit is named by module prefixes
#: (``=name``: that module alone, not its submodules).
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"model": ("model",), "records": ("records",), "study (package)": ("=study",)},
    {"study.data": ("study.data",), "study.weights": ("study.weights",), "study.machine": ("study.machine",),
     # the evaluate stage's torch-free front: the request as data, which planning checks (study.plan.spec)
     "study.evaluate.request": ("study.evaluate.request",),
     # reads what the stages wrote through records, computes with model.flops; nothing from study/
     "analysis": ("analysis",)},
    {"study.plan": ("study.plan",)},
    {"study.train": ("study.train",), "study.evaluate": ("study.evaluate",)},
    {"study.launch": ("study.launch",)},
    {"cli": ("study.cli", "study.sweep", "study.run", "study.sft", "study.eval", "study.lm_eval_cli",
             "study.data.__main__")},
]
CLI_UNIT = "cli"
MAX_LINES = 450
#: modules allowed past MAX_LINES, by name, each with the reason
OVERSIZE_EXEMPT: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (they run for type checkers only, never at import)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def imports(module: str) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names taken from it) for every project import of ``module``, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    skip = _typing_only(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names if _project(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            if not _project(base):
                continue
            plain = [a.name for a in node.names if f"{base}.{a.name}" not in MODULES]
            out += [(f"{base}.{a.name}", node.lineno, []) for a in node.names if f"{base}.{a.name}" in MODULES]
            if plain:
                out.append((base, node.lineno, plain))
    return out


def _target(name: str) -> str | None:
    """The project module an import name loads (``import a.b.c`` of a package path: the longest known)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _unit(module: str) -> tuple[int, str]:
    best = None
    for level, units in enumerate(LAYERS):
        for unit, prefixes in units.items():
            for p in prefixes:
                hit = module == p[1:] if p.startswith("=") else module == p or module.startswith(p + ".")
                if hit and (best is None or len(p) > best[2]):
                    best = (level, unit, len(p))
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py: add it"
    return best[0], best[1]


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for name, _, _ in imports(m):
            t = _target(name)
            if t is not None and t != m:
                g[m].add(t)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out, counter = set(), [], [], [0]
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(g[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return out


# ----------------------------------------------------------------------------------------- the rules
def test_every_module_is_in_a_layer() -> None:
    for m in MODULES:
        _unit(m)


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _points_up(source: str, target: str) -> bool:
    (level, unit), (t_level, t_unit) = _unit(source), _unit(target)
    return t_unit != unit and t_level >= level


def test_imports_point_down() -> None:
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line}: {_unit(m)} imports {t} {_unit(t)}"
           for m in MODULES for name, line, _ in imports(m)
           if (t := _target(name)) is not None and _points_up(m, t)]
    assert bad == []


def test_the_layer_rule_refuses_what_it_should() -> None:
    assert _points_up("study.plan.spec", "study.cli.eval")  # up
    assert _points_up("study.plan.finetune", "study.evaluate.loading")  # up: the evaluate stage proper
    assert _points_up("study.evaluate.task_scores", "study.launch.submit")  # up
    assert _points_up("study.train.trainer", "study.evaluate.loading")  # sideways: same layer, other unit
    assert _points_up("analysis.figures", "study.plan.config")  # analysis never reads study/
    assert not _points_up("study.plan.spec", "study.evaluate.request")  # the request sits below planning
    assert not _points_up("study.evaluate.dispatch", "study.evaluate.loop_scan")  # within a unit


def test_nothing_imports_the_command_lines() -> None:
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {name}" for m in MODULES if _unit(m)[1] != CLI_UNIT
           for name, line, _ in imports(m) if (t := _target(name)) is not None and _unit(t)[1] == CLI_UNIT]
    assert bad == []


#: modules that still import another module's private names, each with the reason (remove once fixed)
PRIVATE_EXEMPT = {"study/data/qa.py": "study/data/ is the control branch's while it adds corpora: give "
                                      "corpora._hub_rows and corpora._read_jsonl public names there"}


def test_no_private_name_crosses_a_module() -> None:
    """``from x import _y`` and ``x._y`` on an imported project module: shared code has a public name."""
    bad = []
    for m, path in MODULES.items():
        if str(path.relative_to(ROOT)) in PRIVATE_EXEMPT:
            continue
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if _project(a.name) and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(m, path, node)
                for a in node.names:
                    if _project(base) and f"{base}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
        for name, line, taken in imports(m):
            bad += [f"{path.relative_to(ROOT)}:{line}: {name}.{n}" for n in taken
                    if n.startswith("_") and not n.startswith("__")]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert bad == []


def test_no_module_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for pkg in ("analysis", "study")
             for p in (ROOT / pkg).rglob("*.py")}
    over = {p: n for p, n in sizes.items() if n > MAX_LINES and p not in OVERSIZE_EXEMPT}
    assert over == {}
    assert all(p in sizes for p in OVERSIZE_EXEMPT)  # an exemption for a module that is gone goes too


# --------------------------------------------------------------------------------- names records owns
def _records_names() -> dict[str, bool]:
    """name -> whether it is distinctive enough to flag in any string, messages included (a file name with a
    dot, the evaluation-jobs folder); plain words (``runs``, ``tb``, ``figures``, also dict keys) are flagged
    where they join a path (``study_dir / "runs"``)."""
    import records

    names = [records.PLAN, records.SPEC, records.RUNS_TABLE, records.FITS, records.REPORT, records.LEDGER,
             records.EVALS, records.METRICS, records.LOOP_DIAG, records.CONFIG, records.SYSTEM, records.DONE,
             records.FAILED, records.RUNNING, records.PREEMPTED, records.MANIFEST, records.SUBMIT_LOCK,
             records.EVAL_JOBS_DIR, records.SNAPSHOTS_DIR, records.FIGURES_DIR, records.TENSORBOARD_DIR,
             records.SUBMITIT_DIR, records.RUNS_DIR, records.EVALS_DIR, records.CKPT_DIR, records.TUNE_DIR,
             records.TUNED]
    return {n: "." in n.strip(".") or "_" in n for n in names}


#: files that still spell a name, each with the reason (remove the entry once it is fixed)
SPELLING_EXEMPT: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_only_records_spells_the_directory_names() -> None:
    names = _records_names()
    bad = []
    for m, path in MODULES.items():
        rel = str(path.relative_to(ROOT))
        if m.split(".")[0] == "records" or rel in SPELLING_EXEMPT:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        joined = {id(side) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                  for side in (node.left, node.right)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                text = node.value
                hits = [n for n, anywhere in names.items()
                        if (anywhere and n in text) or (text == n and id(node) in joined)]
                bad += [f"{rel}:{node.lineno}: {text!r} spells {n!r}" for n in hits]
    assert bad == []


# ------------------------------------------------------------------------------------- torch-free plans
def test_planning_a_spec_with_an_evaluate_stage_loads_no_torch() -> None:
    code = ("import sys\n"
            "from study.plan import spec, table\n"
            "s = spec.load_spec(sys.argv[1])\n"
            "runs = spec.expand(s)\n"
            "assert s.evaluate and runs\n"
            "[table.plan_row(r, s) for r in runs]\n"
            "heavy = sorted(m for m in ('torch', 'deepspeed', 'lm_eval', 'submitit') if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "sweeps" / "demo.yaml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


@pytest.mark.parametrize("program", ["study.sweep", "study.run", "study.sft", "study.eval", "study.data"])
def test_every_program_still_starts(program: str) -> None:
    out = subprocess.run([sys.executable, "-m", program, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "usage: python -m" in out.stdout, out.stderr
