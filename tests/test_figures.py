"""What a reader relies on in each figure, checked on the committed studies (results/demo: every figure;
results/sudoku: a study with no fit): legend entries unique per run, error bars where the report has a CI,
reference lines named in legends, stars on their curves, readable ticks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from analysis.collect import load_loop_diagnostics
from analysis.figures import compute, loops
from analysis.report import run_report

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each study's report and figures take ~20 s on 2 shared cores


def draw(study: str, tmp: Path) -> tuple[dict, object]:
    """The report's figures of a committed study (a copy), kept open for inspection: name -> Figure."""
    d = tmp / study
    shutil.copytree(ROOT / "results" / study, d, ignore=shutil.ignore_patterns("figures"))
    figs: dict = {}
    saved = compute.save

    def keep(fig, figdir, name, formats):
        figs[name] = fig
        return saved(fig, figdir, name, formats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compute, "save", keep)
        mp.setattr(loops, "save", keep)
        res = run_report(d, n_boot=50, formats=("png",))
    return figs, res


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return draw("demo", tmp_path_factory.mktemp("figs"))


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory):
    return draw("sudoku", tmp_path_factory.mktemp("figs"))


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    return draw("paper_shape_cpu", tmp_path_factory.mktemp("figs"))


def legend_texts(fig) -> list[str]:
    out = []
    for leg in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]:
        out += [t.get_text() for t in leg.get_texts()]
    return out


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]


def test_every_tick_label_is_readable(demo, sudoku):
    """No '2^0'-style or '$...$' labels, no two equal labels on one axis."""
    for figs in (demo[0], sudoku[0]):
        for name, fig in figs.items():
            fig.canvas.draw()
            for ax in fig.axes:
                labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
                lo, hi = ax.get_xlim()
                shown = [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if
                         t.get_text() and min(lo, hi) <= v <= max(lo, hi)]
                assert len(set(shown)) == len(shown), (name, shown)
                assert not any("^" in t or "$" in t for t in labels), (name, labels)


def test_loop_state_names_every_run_once(demo):
    figs, _ = demo
    diag = load_loop_diagnostics(ROOT / "results" / "demo")
    texts = legend_texts(figs["loop_state"])
    runs = [t for t in texts if not t.startswith("training s_max")]
    assert len(runs) == len(set(runs)) == diag["run"].nunique()
    assert set(runs) == set(diag["slug"])
    assert any(t.startswith("training s_max = ") for t in texts)


def test_score_vs_loops_has_error_bars_and_draws_what_it_names(demo, sudoku):
    figs, res = demo
    ax = figs["score_vs_loops"].axes[0]
    [bars] = errorbars(ax)
    assert any(c.key.startswith("task[") and c.ci_low is not None for c in res.claims)
    texts = legend_texts(figs["score_vs_loops"])
    assert any("MDM (same size)" in t for t in texts) and not any("deeper" in t for t in texts)
    cap = next(f.caption for f in res.figures if f.name == "score_vs_loops")
    assert "dashed: MDM (same size)" in cap and "dotted" not in cap  # the demo has no deeper MDM task scores
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4"]
    # every score 0 (the Sudoku floor): 0 in view and said so
    sax = sudoku[0]["score_vs_loops"].axes[0]
    assert sax.get_ylim()[0] <= 0 < sax.get_ylim()[1] and "floor" in sax.get_title()


def test_multiplier_one_panel_per_convention_with_reference_lines(demo):
    figs, res = demo
    fig = figs["multiplier_vs_loss"]
    convs = [c for c in res.claims if c.key.startswith("multiplier[") and c.details.get("curve")]
    panels = [a for a in fig.axes if a.get_title()]
    assert len(panels) == len(convs) == 3 and len({a.get_title() for a in panels}) == 3
    texts = legend_texts(fig)
    assert "1x: no saving" in texts and "paper: up to 3.3x" in texts and "95% bootstrap band" in texts


def test_isoflop_stars_lie_on_their_parabolas_and_are_explained(demo):
    figs, res = demo
    fig = figs["isoflop_mdm_deeper"]
    ax = fig.axes[0]
    curves = [ln.get_xydata() for ln in ax.get_lines() if len(ln.get_xydata()) > 5]
    stars = [pt for coll in ax.collections if coll.get_paths() and len(coll.get_offsets()) == 1
             and coll.get_sizes().size and coll.get_sizes()[0] == 110 for pt in coll.get_offsets()]
    assert stars
    for x, y in stars:  # on a drawn curve (data range or its dotted extension)
        assert any(np.min(np.hypot(np.log(c[:, 0] / x), c[:, 1] - y)) < 0.02 for c in curves), (x, y)
    texts = legend_texts(fig)
    assert "optimum (parabola minimum)" in texts and "optimum beyond the sizes tried (not trusted)" in texts


def test_adaptive_has_cis_in_both_panels_and_scales_to_the_data(demo):
    figs, res = demo
    left, right = figs["adaptive_loops"].axes[:2]
    assert errorbars(left) and errorbars(right)
    claim = next(c for c in res.claims if c.key == "adaptive")
    reach = max(max(abs(t["delta_low"]), abs(t["delta_high"])) for t in claim.details["thresholds"])
    lo, hi = right.get_ylim()
    assert hi <= max(1.5 * reach, 1.2 * claim.details["margin"]) and lo < 0 < hi
    assert not right.patches  # the margin is two named lines (or a legend entry), never a band filling the panel
    texts = legend_texts(figs["adaptive_loops"])
    assert any(t.startswith("equal-quality margin ±") for t in texts)
    assert any(t.startswith("fixed S = ") for t in texts) and "no change vs fixed S" in texts


def test_nll_vs_inference_flops_and_nll_vs_loops_have_error_bars_and_named_references(demo, sudoku):
    figs, _ = demo
    ax = figs["nll_vs_inference_flops"].axes[0]
    assert len(errorbars(ax)) >= 4  # per width: fixed S, adaptive exit, same-size and deeper MDM
    for figs_ in (demo[0], sudoku[0]):
        ax = figs_["nll_vs_loops"].axes[0]
        [bars] = errorbars(ax)
        assert any(np.nanmax(np.abs(seg.get_segments()[i][1][1] - seg.get_segments()[i][0][1])) > 0
                   for seg in bars.lines[2] for i in range(len(seg.get_segments())))
        assert any(t.startswith("training s_max = ") for t in legend_texts(figs_["nll_vs_loops"]))


def test_loss_vs_flops_without_a_fit_shows_plain_points(sudoku):
    fig = sudoku[0]["loss_vs_flops_exact"]
    ax = fig.axes[0]
    texts = legend_texts(fig)
    assert not any("fitted to" in t or "extrapolated" in t for t in texts)
    assert all(math.isclose(c.get_alpha() or 1.0, 0.9) for c in ax.collections if len(c.get_offsets()))


def test_inference_compute_names_each_comparison_group_once(shape, demo):
    """Many looped variants of one width (paper_shape_cpu): each line is named by its looped run."""
    for figs, _ in (shape, demo):
        texts = legend_texts(figs["nll_vs_inference_flops"])
        lines = [t for t in texts if t.endswith("(LoopMDM, fixed S)")]
        assert len(lines) == len(set(lines)) >= 2
        assert {"LoopMDM, adaptive exit", "same-size MDM", "deeper MDM"} <= set(texts)
    md = (shape[1].report_path).read_text()
    assert "](figures/nll_vs_inference_flops.png)" in md  # shown in claim 4's section
