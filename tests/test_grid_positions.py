"""Row, column and box position embeddings for grid records (model.grid_box): what each position is told,
what it costs, and that a run without them keeps its identity."""
import pytest
import torch

from model import ConfigError, LoopMDM, ModelConfig, flops
from model.transformer import grid_index
from study.data import sudoku

torch.set_num_threads(1)


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=40, d_model=32, n_heads=4, n_head_layers=1, n_mid_layers=1, n_tail_layers=1,
                s_max=3, max_seq_len=91)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("size", [4, 6, 9])
def test_positions_of_a_laid_out_grid_are_its_rows_columns_and_boxes(size):
    """Two cells share a row / column / box index exactly when the generator calls them peers that way."""
    geo = sudoku.geometry(size)
    L = sudoku.record_len(size)
    idx = grid_index(sudoku.BOXES[size], L)
    n = size
    cell_pos = [r * (n + 1) + c for r in range(n) for c in range(n)]  # where cell (r, c) sits in `layout`
    for i, p in enumerate(cell_pos):
        for j, q in enumerate(cell_pos):
            if i == j:
                continue
            same = [bool(idx[p, k] == idx[q, k]) for k in range(3)]
            assert any(same) == (j in geo.peers[i])  # peers: same row, column or box
            assert same[0] == (i // n == j // n) and same[1] == (i % n == j % n)
    breaks = [r * (n + 1) + n for r in range(n)]
    assert all(idx[p, 1] == 2 * n + 1 and idx[p, 2] == 3 * n + 2 for p in breaks)  # line breaks: column, box "none"
    assert idx[L - 1].tolist() == [n, 2 * n + 1, 3 * n + 2]  # eos: outside the grid
    assert idx.min() >= 0 and idx.max() == 3 * (n + 1) - 1


def test_grid_embeddings_are_counted_as_embedding_parameters_and_cost_no_matmul_flops():
    plain, grid = tiny(), tiny(grid_box=[3, 3])
    assert grid.grid_box == (3, 3) and hash(grid)  # YAML gives a list; the config stays hashable
    extra = 3 * 10 * 32
    assert flops.param_counts(grid).embedding == flops.param_counts(plain).embedding + extra
    assert flops.param_counts(grid).nonembedding == flops.param_counts(plain).nonembedding
    for cfg in (grid, grid.non_looped(), grid.deeper(91)):
        assert cfg.grid_box == (3, 3)  # baselines see the same positions
        assert sum(p.numel() for p in LoopMDM(cfg).parameters()) == flops.param_counts(cfg).total
    assert flops.forward_flops(grid, 91, 2) == flops.forward_flops(plain, 91, 2)


def test_grid_embeddings_change_the_output_and_follow_left_padding():
    torch.manual_seed(0)
    m = LoopMDM(tiny(grid_box=[2, 2])).eval()
    x = torch.randint(0, 39, (1, 21))
    out = m(x, loops=2)
    with torch.no_grad():
        m.grid_embed.weight.zero_()
    assert not torch.allclose(out, m(x, loops=2))  # the embeddings reach the logits
    torch.manual_seed(0)
    m = LoopMDM(tiny(grid_box=[2, 2])).eval()
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), x], 1)
    pad = torch.zeros_like(padded, dtype=torch.bool)
    pad[:, :5] = True
    assert torch.allclose(m(padded, loops=2, pad=pad)[:, 5:], m(x, loops=2), atol=1e-5)  # numbered from the record


@pytest.mark.parametrize("value, why", [([3], "box_rows, box_cols"), ([0, 3], "positive"), ([2, True], "positive"),
                                         ([5, 5], "max_seq_len")])
def test_bad_grid_boxes_are_one_line_naming_the_field(value, why):
    with pytest.raises(ConfigError) as e:
        tiny(grid_box=value)
    assert e.value.field == "model.grid_box" and why in str(e.value) and "\n" not in str(e.value)


def test_grid_positions_enter_the_run_hash_only_when_set():
    from study.plan import config as C

    raw = {"model": {"d_model": 32, "n_heads": 4}, "data": {"corpus": "sudoku:6x6", "seq_len": 43, "align": True}}
    base = C.from_dict(raw)
    assert "grid_box" not in base.semantic_dict()["model"]
    assert C.from_dict(C.apply_overrides(raw, ["model.grid_box=null"])).hash == base.hash
    grid = C.from_dict(C.apply_overrides(raw, ["model.grid_box=[2, 3]"]))
    assert grid.hash != base.hash and grid.semantic_dict()["model"]["grid_box"] == [2, 3]
    assert C.from_dict(grid.to_dict()).hash == grid.hash  # the written config reads back to the same run
