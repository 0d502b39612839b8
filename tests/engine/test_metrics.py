"""Metric definitions (docs/models/glf_cr.md, "Metrics")."""

import math

import pytest
import torch

from cloudrm_engine import metrics


def test_identical_images():
    torch.manual_seed(0)
    x = torch.rand(2, 13, 32, 32)
    assert metrics.psnr(x, x) == 100.0
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.sam(x, x) <= 0.02
    assert metrics.mae(x, x) == 0.0


def test_constant_error():
    x = torch.full((13, 16, 16), 0.5)
    y = x + 0.01
    assert metrics.psnr(y, x) == pytest.approx(40.0, abs=1e-4)
    assert metrics.mae(y, x) == pytest.approx(0.01, abs=1e-6)


def test_sam_right_angle():
    p = torch.zeros(2, 1, 1)
    t = torch.zeros(2, 1, 1)
    p[0] = 1
    t[1] = 1
    assert metrics.sam(p, t) == pytest.approx(90.0, abs=1e-3)


def test_ssim_window_has_official_offcentre():
    w = metrics.gaussian_window(11, 1.5)
    assert w.sum().item() == pytest.approx(1.0)
    # centre 5.5 (11 / 2): columns 5 and 6 weigh the same
    assert w[5, 5].item() == pytest.approx(w[6, 6].item())
    assert not math.isclose(w[5, 5].item(), w[4, 4].item())
