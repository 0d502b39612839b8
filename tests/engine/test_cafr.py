"""CAFR against docs/models/cafr.md: network, cloud mask M′, loss."""

import numpy as np
import pytest
import rasterio
import torch

from cloudrm_engine.data.cloudmask import (
    cafr_cloud_mask,
    cafr_cloud_score,
    cloud_mask,
    cloud_ramps,
    ndsi,
    shadow_mask,
)
from cloudrm_engine.errors import InputError
from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from cloudrm_engine.layers.windows import shifted_window_mask, window_partition
from cloudrm_engine.losses.cafr import cafr_loss, cloud_weights
from cloudrm_engine.models import count_parameters, create_model, model_card
from cloudrm_engine.models.cafr import CAFR, RepoOrderWindowAttention
from cloudrm_engine.models.glf_cr import GLFCR, DualWindowAttention
from tests.conftest import S2_SAMPLE

# --------------------------------------------------------------------------- network


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_docs_and_card():
    assert count_parameters("cafr") == 14_827_373 == model_card("cafr").parameters
    assert count_parameters("cafr", repo_gate_order=True) == 14_827_373


def test_card():
    card = model_card("cafr")
    assert card.optical_bands == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    assert card.sar_bands == ("VV", "VH")
    assert card.default_checkpoint is None and card.size_multiple == 16


def test_per_module_counts_match_docs_table():
    """Per-module counts, as measured on the repository network."""
    with torch.device("meta"):
        m = CAFR()
    assert [n_params(getattr(m, k)) for k in ("SFENet1", "SFENet2", "SFENet1_SAR", "SFENet2_SAR")] == [
        124_896, 83_040, 19_296, 83_040,
    ]
    assert n_params(m.RDBs) == 9_652_320
    assert n_params(m.DF) == 4_385_664
    assert n_params(m.sar_fuse_1x1conv) == n_params(m.opt_distribute_1x1conv) == 55_872
    assert n_params(m.GFF) == 138_432
    assert n_params(m.UPNet) == 228_941


@pytest.mark.parametrize("repo_gate_order", [False, True])
def test_state_dict_names_are_glf_cr_names(repo_gate_order):
    with torch.device("meta"):
        ours, glf = CAFR(repo_gate_order=repo_gate_order), GLFCR()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in glf.state_dict().items()
    }
    assert len(ours.state_dict()) == len(glf.state_dict())


def test_official_checkpoint_layout_loads(tmp_path):
    """A repo/GLF-CR style file (DataParallel prefix, 128-px attn_mask buffers) loads strictly."""
    torch.manual_seed(1)
    src = CAFR()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    for i in range(6):
        for c in (1, 3):
            state[f"module.RDBs.{i}.convs.{c}.attn_mask"] = shifted_window_mask(64, 64, 8, 4)
    torch.save({"network": state}, tmp_path / "CR_net.pth")
    ckpt = load_checkpoint(tmp_path / "CR_net.pth", model="cafr")
    assert ckpt.model == "cafr" and ckpt.config == {}
    loaded = build_model(ckpt)
    assert isinstance(loaded, CAFR)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.fixture(scope="module")
def model() -> CAFR:
    torch.manual_seed(0)
    return create_model("cafr").eval()


def test_shapes_at_64_and_32_px_with_one_set_of_weights(model):
    with torch.inference_mode():
        y64 = model(torch.rand(2, 13, 64, 64), torch.rand(2, 2, 64, 64))
        y32 = model(torch.rand(1, 13, 32, 48), torch.rand(1, 2, 32, 48))
    assert y64.shape == (2, 13, 64, 64) and y32.shape == (1, 13, 32, 48)
    assert torch.isfinite(y64).all() and torch.isfinite(y32).all()


def test_size_not_multiple_of_16_is_rejected():
    with torch.device("meta"):
        m = CAFR()
    with pytest.raises(ValueError, match="multiples of 16, got 130×128"):
        m(torch.rand(1, 13, 130, 128, device="meta"), torch.rand(1, 2, 130, 128, device="meta"))


def test_identity_residual_is_exact(model):
    """Zeroing the last IRN conv gives pred == cloudy bit for bit."""
    m = CAFR()
    m.load_state_dict(model.state_dict())
    m.eval()
    with torch.no_grad():
        m.UPNet[2].weight.zero_()
        m.UPNet[2].bias.zero_()
        x = torch.rand(1, 13, 32, 32)
        assert torch.equal(m(x, torch.rand(1, 2, 32, 32)), x)


def test_batch_of_two_equals_two_batches_of_one(model):
    torch.manual_seed(5)
    x, s = torch.rand(2, 13, 32, 32), torch.rand(2, 2, 32, 32)
    with torch.inference_mode():
        both = model(x, s)
        one = torch.cat([model(x[i : i + 1], s[i : i + 1]) for i in range(2)])
        again = model(x, s)
    torch.testing.assert_close(both, one, rtol=1e-5, atol=1e-5)
    assert torch.equal(both, again)


def attention_pair(bias: float | None = None) -> tuple[DualWindowAttention, RepoOrderWindowAttention]:
    torch.manual_seed(2)
    glf = DualWindowAttention(48, 8, 8)
    repo = RepoOrderWindowAttention(48, 8, 8)
    if bias is not None:
        with torch.no_grad():
            glf.attn_fuse_1x1conv.weight.zero_()
            glf.attn_fuse_1x1conv.bias.fill_(bias)
    repo.load_state_dict(glf.state_dict())
    return glf, repo


def windows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 16, 48, generator=g)
    return window_partition(x, 8), window_partition(torch.randn(1, 16, 16, 48, generator=g), 8)


def test_gate_orders_agree_without_shift():
    glf, repo = attention_pair()
    x, s = windows(0)
    a, b = glf(x, s, None), repo(x, s, None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_repo_gate_order_leaves_sar_unmasked():
    """Gate/mask order: with g ≈ 0 the optical stream is the same in both orders; the SAR stream of
    the repository attends across shift regions, GLF-CR's does not."""
    glf, repo = attention_pair(bias=-30.0)
    x, s = windows(1)
    mask = shifted_window_mask(16, 16, 8, 4)
    (opt_g, sar_g), (opt_r, sar_r) = glf(x, s, mask), repo(x, s, mask)
    torch.testing.assert_close(opt_g, opt_r, rtol=1e-5, atol=1e-6)
    assert (sar_g - sar_r).abs().max() > 1e-2
    # SAR attention of the repo order equals plain unmasked attention
    assert torch.equal(sar_r, repo(x, s, None)[1])


def test_gate_open_makes_optical_use_sar_logits():
    """Gate bias +30 (g ≈ 1) → A_opt ≈ A_sar, so opt output = softmax(A_sar)·v_opt."""
    glf, _ = attention_pair(bias=30.0)
    x, s = windows(2)
    opt, _ = glf(x, s, None)
    logits_sar, _ = glf._logits(glf.qkv_SAR, s)
    _, v = glf._logits(glf.qkv, x)
    bias = glf.relative_position_bias_table[glf.relative_position_index.view(-1)].view(64, 64, -1).permute(2, 0, 1)
    expect = ((logits_sar + bias).softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(opt, glf.proj(expect), rtol=1e-4, atol=1e-5)


def test_repo_gate_order_model_runs_and_differs(model):
    m = create_model("cafr", repo_gate_order=True).eval()
    m.load_state_dict(model.state_dict())
    assert all(isinstance(layer.attn, RepoOrderWindowAttention) for b in m.RDBs for layer in b.convs)
    torch.manual_seed(3)
    x, s = torch.rand(1, 13, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.inference_mode():
        d = (m(x, s) - model(x, s)).abs().max()
    assert 0 < d < 1.0


# --------------------------------------------------------------------------- cloud mask M′

CLOUD = np.array([3000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 500, 4000, 3000], dtype=np.float64)
DARK = 500.0


def image(vector: np.ndarray, size: int = 256) -> np.ndarray:
    return np.broadcast_to(vector[:, None, None], (13, size, size)).copy()


def test_cloud_vector_ramps():
    r = cloud_ramps(CLOUD[:, None, None] / 10000)
    got = {k: float(v) for k, v in r.items()}
    assert got == pytest.approx({"B2": 1.0, "B1": 1.0, "B1+B10": 4.0, "B4+B3+B2": 2.16667, "snow": 3.44444}, abs=1e-5)
    assert float(ndsi(CLOUD[:, None, None])) == pytest.approx(1000 / 9000)


def test_all_cloud_image_border_scores():
    s = cafr_cloud_score(image(CLOUD))
    assert float(s[0, 0]) == pytest.approx(16 / 49) == pytest.approx(0.3265, abs=1e-4)
    assert float(s[0, 128]) == pytest.approx(28 / 49) == pytest.approx(0.5714, abs=1e-4)
    assert float(s[128, 128]) == 1.0
    assert cafr_cloud_mask(image(CLOUD)).all()


def test_dark_and_snow_images_are_clear():
    dark = np.full((13, 64, 64), DARK)
    assert float(cafr_cloud_score(dark).max()) == pytest.approx(1e-5)  # raw score −1, clipped
    assert cafr_cloud_mask(dark).sum() == 0
    snow = CLOUD.copy()
    snow[2], snow[11] = 8000, 500
    assert cafr_cloud_mask(image(snow, 32)).sum() == 0
    assert cafr_cloud_mask(image(snow, 32), method="paper").sum() == 0


def test_64px_square_loses_one_pixel_ring_and_corners():
    """Background score −1 is not clipped before the box filter."""
    dn = np.full((13, 256, 256), DARK)
    dn[:, 96:160, 96:160] = CLOUD[:, None, None]
    m = cafr_cloud_mask(dn)
    assert m.dtype == np.bool_ and m.shape == (256, 256)
    ys, xs = np.nonzero(m)
    assert m.sum() == 3840 == 62 * 62 - 4
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (97, 158, 97, 158)
    assert not m[97, 97] and m[97, 98] and not m[158, 158]
    # the paper-literal rule has no filtering: exactly the square
    assert cafr_cloud_mask(dn, method="paper").sum() == 64 * 64


def test_dn_and_reflectance_entry_points_agree():
    dn = np.full((13, 256, 256), DARK)
    dn[:, 96:160, 96:160] = CLOUD[:, None, None]
    assert np.array_equal(cafr_cloud_mask(dn), cloud_mask(dn / 10000))
    batch = cafr_cloud_mask(np.stack([dn, image(CLOUD)]).astype(np.uint16))
    assert batch.shape == (2, 256, 256) and batch[0].sum() == 3840 and batch[1].all()


def test_threshold_moves_the_edge():
    """Near the square's edge the score is (2·k1·k2 − 49) / 49 for k1×k2 cloudy box taps."""
    dn = np.full((13, 128, 128), DARK)
    dn[:, 32:96, 32:96] = CLOUD[:, None, None]
    s = cafr_cloud_score(dn)
    assert float(s[33, 33]) == pytest.approx((2 * 25 - 49) / 49)
    assert float(s[34, 34]) == pytest.approx((2 * 36 - 49) / 49)
    assert float(s[33, 60]) == pytest.approx((2 * 35 - 49) / 49)
    m = cafr_cloud_mask(dn, threshold=0.5)  # drops the k = 5 ring and the 6×6 corners
    ys, _xs = np.nonzero(m)
    assert m.sum() == 60 * 60 - 4 and (ys.min(), ys.max()) == (34, 93)


def test_nan_takes_the_band_mean():
    dn = image(CLOUD, 32)
    dn[:, 10, 10] = np.nan
    assert cafr_cloud_mask(dn)[4:28, 4:28].all()


def test_wrong_band_count_is_a_clear_error():
    with pytest.raises(InputError, match=r"\(13, H, W\).*got shape \(12, 8, 8\)"):
        cafr_cloud_mask(np.zeros((12, 8, 8)))
    with pytest.raises(ValueError, match="one of repo, paper"):
        cafr_cloud_mask(np.zeros((13, 8, 8)), method="sen2cor")


def reference_cloud_score(dn: np.ndarray) -> np.ndarray:
    """DSen2-CR's formulation with scipy, written out for comparison."""
    ndimage = pytest.importorskip("scipy.ndimage")
    signal = pytest.importorskip("scipy.signal")
    d = dn.astype(np.float64) / 10000

    def r(x, lo, hi):
        return (x - lo) / (hi - lo)

    den = d[2] + d[11]
    den[den == 0] = 0.001
    score = np.ones(d.shape[1:])
    for term in (r(d[1], 0.1, 0.5), r(d[0], 0.1, 0.3), r(d[0] + d[10], 0.15, 0.2),
                 r(d[3] + d[2] + d[1], 0.2, 0.8), r((d[2] - d[11]) / den, 0.8, 0.6)):
        score = np.minimum(score, term)
    score = ndimage.grey_closing(score, size=(5, 5))
    score = signal.convolve2d(score, np.ones((7, 7)) / 49, mode="same")
    return np.clip(score, 1e-5, 1.0)


def test_matches_scipy_formulation_on_real_sample():
    with rasterio.open(S2_SAMPLE) as ds:
        dn = ds.read()
    ref = reference_cloud_score(dn)
    ours = cafr_cloud_score(dn.astype(np.float64)).numpy()
    assert np.abs(ours - ref).max() < 1e-12
    m = cafr_cloud_mask(dn)
    assert np.array_equal(m, ref >= 0.2)
    assert m.mean() == pytest.approx(0.3144, abs=1e-4)  # bundled summer_19_p30 sample
    assert cafr_cloud_mask(dn, method="paper").mean() == pytest.approx(0.3062, abs=1e-4)


def test_shadow_detector_matches_scipy_on_real_sample():
    signal = pytest.importorskip("scipy.signal")
    with rasterio.open(S2_SAMPLE) as ds:
        d = ds.read().astype(np.float64) / 10000
    csi = (d[7] + d[11]) / 2
    t3 = csi.min() + 0.75 * (csi.mean() - csi.min())
    t4 = d[1].min() + 5 / 6 * (d[1].mean() - d[1].min())
    raw = np.where((csi < t3) & (d[1] < t4), -1.0, 0.0).astype(np.float32)
    ref = signal.medfilt2d(raw, 5) < 0
    got = shadow_mask(d * 10000)
    assert np.array_equal(got, ref)
    assert got.mean() == pytest.approx(0.1747, abs=1e-4)


# --------------------------------------------------------------------------- loss


def loss_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 13, 24, 24, generator=g, dtype=torch.float64) * 0.5 + 0.1
    return gt + 0.05 * torch.randn(gt.shape, generator=g, dtype=torch.float64), gt


def test_weights_are_alpha_on_cloud():
    w = cloud_weights(torch.tensor([[1, 0], [0, 1]]))
    torch.testing.assert_close(w, torch.tensor([[0.8, 0.2], [0.2, 0.8]]))


def test_loss_with_all_cloud_or_all_clear_mask():
    pred, gt = loss_inputs()
    ones, zeros = torch.ones(2, 24, 24), torch.zeros(2, 24, 24)
    plain = cafr_loss(pred, gt, ones, weighted=False)
    assert float(cafr_loss(pred, gt, ones)) == pytest.approx(0.8 * float(plain), rel=1e-12)
    assert float(cafr_loss(pred, gt, zeros)) == pytest.approx(0.2 * float(plain), rel=1e-12)


def test_constant_offset_hand_values():
    gt = torch.full((1, 13, 16, 16), 0.3, dtype=torch.float64)
    pred = gt + 0.1
    mask = torch.zeros(1, 16, 16)
    mask[:, :8] = 1  # half the pixels cloudy: mean weight 0.5
    # paper, MSE only: 0.5 · 0.01 · mean(W) = 0.0025
    assert float(cafr_loss(pred, gt, mask, lambda_ssim=0)) == pytest.approx(0.0025, rel=1e-12)
    # repo, SSIM weight 0: 2.0 · (0.1 · ½) + 0.5 · 0.1 = 0.15; with MSE pixel term 0.1 + 0.005
    assert float(cafr_loss(pred, gt, mask, repo_loss=True, repo_weights=(2.0, 0.5, 0.0))) == pytest.approx(0.15)
    assert float(
        cafr_loss(pred, gt, mask, repo_loss=True, pixel_loss="mse", repo_weights=(2.0, 0.5, 0.0))
    ) == pytest.approx(0.105)


def test_identical_images_give_zero_loss():
    _, gt = loss_inputs()
    mask = torch.rand(2, 24, 24) > 0.5
    assert float(cafr_loss(gt, gt, mask, ssim_eps=0.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(cafr_loss(gt, gt, mask, repo_loss=True, ssim_eps=0.0)) == pytest.approx(0.0, abs=1e-12)
    # the repo's +1e-8 in the SSIM denominator leaves a tiny residue on bright images ...
    assert 0 < float(cafr_loss(gt, gt, mask)) < 1e-3
    # ... and SSIM(0, 0) = C1·C2 / (C1·C2 + 1e-8) = 0.9 on a black image
    black = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    assert float(cafr_loss(black, black, torch.zeros(1, 16, 16), weighted=False)) == pytest.approx(0.5 * 0.1)


def grad_at(mask_value: int, **kw) -> float:
    gt = torch.full((1, 1, 8, 8), 0.4, dtype=torch.float64)
    pred = (gt + 0.1).requires_grad_()
    mask = torch.full((1, 8, 8), mask_value)
    cafr_loss(pred, gt, mask, **kw).backward()
    return float(pred.grad[0, 0, 4, 4])


def test_cloud_pixel_gradient_ratios():
    """MSE term 4× on cloud pixels (0.8 / 0.2); repo L1 term 5× ((2.0 + 0.5) / 0.5)."""
    assert grad_at(1, lambda_ssim=0) / grad_at(0, lambda_ssim=0) == pytest.approx(4.0)
    kw = {"repo_loss": True, "repo_weights": (2.0, 0.5, 0.0)}
    assert grad_at(1, **kw) / grad_at(0, **kw) == pytest.approx(5.0)


def test_mask_shape_is_checked():
    pred, gt = loss_inputs()
    with pytest.raises(ValueError, match="cloud mask must be"):
        cafr_loss(pred, gt, torch.ones(2, 12, 12))
