"""Basic losses (CAFR, MMCANet): L1, MSE, Gaussian SSIM, L1 + SSIM."""

import math

import numpy as np
import pytest
import torch

from cloudrm_engine.losses.basic import (
    gaussian_window,
    l1_loss,
    l1_ssim_loss,
    mse_loss,
    ssim,
    ssim_loss,
    ssim_map,
)


def pair(seed: int = 0, shape=(2, 3, 20, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    return x, (x + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)


def test_constant_offset_l1_and_mse():
    x = torch.full((1, 13, 8, 8), 0.25, dtype=torch.float64)
    assert float(l1_loss(x + 0.01, x)) == pytest.approx(0.01, rel=1e-12)
    assert float(mse_loss(x + 0.1, x)) == pytest.approx(0.01, rel=1e-12)
    assert float(l1_loss(x - 0.2, x)) == pytest.approx(0.2, rel=1e-12)


def test_gaussian_window():
    w = gaussian_window(11, 1.5, torch.float64)
    assert w.shape == (11, 11)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    assert torch.equal(w, w.T) and torch.equal(w, w.flip(0))  # centred on tap 5
    g = [math.exp(-((i - 5) ** 2) / 4.5) for i in range(11)]
    assert float(w[5, 5]) == pytest.approx((g[5] / sum(g)) ** 2, rel=1e-12)
    assert float(w[5, 5]) == pytest.approx(0.070762, abs=1e-6)  # 1 / 3.759233²


def test_identical_images():
    x, _ = pair()
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(l1_ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-12)


def test_flat_images_have_closed_form_ssim_inside():
    """Away from the zero-padded border, flat a vs flat b: SSIM = (2ab + C1) / (a² + b² + C1)."""
    a = torch.full((1, 1, 32, 32), 0.5, dtype=torch.float64)
    b = torch.full((1, 1, 32, 32), 0.6, dtype=torch.float64)
    s = ssim_map(a, b)
    expect = (2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4)
    assert expect == pytest.approx(0.983609, abs=1e-6)
    torch.testing.assert_close(s[0, 0, 5:-5, 5:-5], torch.full((22, 22), expect, dtype=torch.float64))
    assert float(s[0, 0, 0, 0]) != pytest.approx(expect, abs=1e-3)  # borders see the zero fill


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Independent SSIM: scipy correlation with zero fill, per band, mean over everything."""
    ndimage = pytest.importorskip("scipy.ndimage")
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / g.sum() ** 2
    vals = []
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            def f(a):
                return ndimage.correlate(a, w, mode="constant", cval=0.0)
            p, t = x[b, c], y[b, c]
            mx, my = f(p), f(t)
            vx, vy, cxy = f(p * p) - mx**2, f(t * t) - my**2, f(p * t) - mx * my
            vals.append(((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    return float(np.mean(vals))


def test_ssim_matches_independent_reference():
    x, y = pair(3)
    ref = reference_ssim(x.numpy(), y.numpy())
    assert float(ssim(x, y)) == pytest.approx(ref, abs=1e-12)
    assert 0.5 < ref < 0.99
    assert float(l1_ssim_loss(x, y)) == pytest.approx(float((x - y).abs().mean()) + 1 - ref, abs=1e-12)


def test_ssim_is_symmetric_and_differentiable():
    x, y = pair(4)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), abs=1e-14)
    p = y.clone().requires_grad_()
    l1_ssim_loss(p, x).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_epsilon_lowers_ssim_of_black_images():
    z = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    assert float(ssim(z, z)) == pytest.approx(1.0)
    assert float(ssim(z, z, eps=1e-8)) == pytest.approx(0.9)  # C1·C2 / (C1·C2 + 1e-8)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"two \(B, C, H, W\) tensors of one shape"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 8))
