"""Tiling: exact identity, partition of unity, model-period offsets, bounded memory."""

import numpy as np
import pytest

from cloudrm_engine.inference.tiling import StreamingBlender, TileGrid, weight_window


def run_identity(h: int, w: int, tile: int, overlap: int, multiple: int = 16):
    grid = TileGrid(h, w, tile, overlap, multiple)
    rng = np.random.default_rng(0)
    img = rng.random((3, h, w)).astype(np.float32)
    out = np.full((3, h, w), np.nan)
    hits = np.zeros((h, w), dtype=int)

    def emit(y, x, v):
        out[:, y : y + v.shape[1], x : x + v.shape[2]] = v
        hits[y : y + v.shape[1], x : x + v.shape[2]] += 1

    blender = StreamingBlender(grid, 3, emit)
    for t in grid:
        part = img[:, t.y : t.y + t.h, t.x : t.x + t.w]
        padded = np.pad(part, ((0, 0), (0, grid.size - t.h), (0, grid.size - t.w)), mode="reflect")
        blender.add(t, padded, grid.weight(t))
    return grid, blender, img, out, hits


@pytest.mark.parametrize(
    "h,w,tile,overlap",
    [(256, 256, 128, 64), (300, 200, 96, 20), (50, 70, 256, 32), (1000, 64, 64, 16), (17, 333, 48, 16)],
)
def test_identity_model_reproduces_input_exactly(h, w, tile, overlap):
    _grid, blender, img, out, hits = run_identity(h, w, tile, overlap)
    assert blender.done
    assert (hits == 1).all(), "every pixel is written exactly once"
    assert np.array_equal(out.astype(np.float32), img)


def test_grid_rounds_to_the_model_period():
    g = TileGrid(1000, 1000, 250, 30, 16)
    assert g.size == 240 and g.stride % 16 == 0 and g.overlap >= 30
    assert all(y % 16 == 0 for y in g.ys) and all(x % 16 == 0 for x in g.xs)
    assert g.ys[-1] + g.size >= 1000  # the last tile reaches the edge (padded beyond)
    small = TileGrid(50, 70, 256, 32, 16)
    assert small.size == 80 and len(small) == 1  # capped at the scene, rounded up to 16


def test_bad_tiling_parameters():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(100, 100, 64, 64, 16)
    with pytest.raises(ValueError, match="smaller than the model's multiple"):
        TileGrid(100, 100, 8, 0, 16)


def test_weights_are_a_partition_of_unity():
    grid = TileGrid(400, 400, 128, 48, 16)
    total = np.zeros((400, 400))
    for t in grid:
        total[t.y : t.y + t.h, t.x : t.x + t.w] += grid.weight(t)[: t.h, : t.w]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    rising = weight_window(64, 32, True, False)
    falling = weight_window(64, 32, False, True)
    assert rising.min() > 0 and rising[31] < 1 and (rising[32:] == 1).all()
    np.testing.assert_allclose(rising[:32] + falling[32:], 1.0)  # neighbours' ramps sum to 1


def test_pending_memory_does_not_grow_with_scene_height():
    peaks = []
    for h in (512, 2048):
        grid = TileGrid(h, 256, 64, 16, 16)
        blender = StreamingBlender(grid, 1, lambda y, x, v: None)
        for t in grid:
            blender.add(t, np.ones((1, 64, 64), np.float32), grid.weight(t))
        assert blender.done
        peaks.append(blender.peak_pending_pixels)
    assert peaks[0] == peaks[1]
    # an overlap-high strip across the width, plus the current tile's overlaps
    assert peaks[0] <= 16 * 256 + 2 * 64 * 16


@pytest.mark.parametrize("h,w,tile,overlap", [(300, 200, 96, 20), (256, 256, 128, 64), (700, 450, 256, 32)])
def test_blend_equals_the_plain_weighted_mean_bit_for_bit(h, w, tile, overlap):
    """Tiles that disagree, blended streaming (cells covered by one tile skip the arithmetic)
    against Σ p·w / Σ w over the whole image in float64, accumulated in the same tile order."""
    grid = TileGrid(h, w, tile, overlap, 16)
    rng = np.random.default_rng(1)
    preds = {t.index: (rng.random((2, grid.size, grid.size)) * (1 + t.index)).astype(np.float32) for t in grid}
    acc, wsum = np.zeros((2, h, w)), np.zeros((h, w))
    for t in grid:
        wt = grid.weight(t)[: t.h, : t.w].astype(np.float64)
        acc[:, t.y : t.y + t.h, t.x : t.x + t.w] += preds[t.index][:, : t.h, : t.w].astype(np.float64) * wt
        wsum[t.y : t.y + t.h, t.x : t.x + t.w] += wt
    out = np.full((2, h, w), np.nan)

    def emit(y, x, v):
        out[:, y : y + v.shape[1], x : x + v.shape[2]] = v

    blender = StreamingBlender(grid, 2, emit)
    for t in grid:
        blender.add(t, preds[t.index], grid.weight(t))
    assert blender.done
    assert np.array_equal(out, acc / wsum)
