"""CA-MTCR model checks (docs/models/ca_mtcr.md; no dataset needed; random weights, 32 px inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cloudrm_engine.errors import InputError
from cloudrm_engine.models import count_parameters, create_model, list_models, model_card
from cloudrm_engine.models.ca_mtcr import CAMTCR, position_code

H = 32


def _model(**cfg: object) -> CAMTCR:
    torch.manual_seed(0)
    return create_model("ca_mtcr", **cfg).eval()


@pytest.fixture(scope="module")
def model() -> CAMTCR:
    return _model()


def _inputs(t: int, b: int = 1, size: int = H, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.rand(b, t, 13, size, size, generator=g)
    sar = torch.rand(b, t, 2, size, size, generator=g)
    days = (torch.arange(t, dtype=torch.float32) * 7 - 7 * (t - 1)).expand(b, t).clone()
    return opt, sar, days


class ForcedHead(nn.Module):
    """Replaces a region head: returns a fixed mask R (1, 1, h, w), broadcast over the batch."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, f_in: torch.Tensor, f_out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.mask.expand(f_in.shape[0], 1, h, w)


def _parts(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_card_and_registry() -> None:
    card = model_card("ca_mtcr")
    assert "ca_mtcr" in list_models(temporal=True)
    assert card.temporal and card.size_multiple == 8 and card.default_checkpoint is None
    assert card.normalisation["sar"]["clip"] == [[-25.0, 0.0], [-25.0, 0.0]]
    assert len(card.optical_bands) == 13 and card.sar_bands == ("VV", "VH")
    assert card.parameters == count_parameters("ca_mtcr") == 7_431_287


def test_parameter_counts_per_part(model: CAMTCR) -> None:
    assert _parts(model) == 7_431_287
    enc = model.opt_encoder
    assert _parts(enc) == 6_158_762
    assert _parts(enc.patch_embed) == 47_652
    assert _parts(enc.unembed) == 468_992
    assert [_parts(b) for b in enc.blocks] == [626_772] * 9
    assert [_parts(h) for h in enc.heads] == [130] * 9
    assert _parts(model.sar_encoder) == 394_816
    assert _parts(model.sar_encoder[3]) == 85_760  # one MBConv
    assert _parts(model.fusion) == 380_800
    assert _parts(model.caf_conv) == 16_640
    assert _parts(model.ltae) == 49_792
    assert _parts(model.decoder) + _parts(model.out_conv) == 430_477
    # Ablations: w/o RegS, w/o SAR; w/o CA keeps every parameter.
    assert count_parameters("ca_mtcr", region_selection=False) == 7_430_117
    assert count_parameters("ca_mtcr", use_sar=False) == 6_889_015
    assert count_parameters("ca_mtcr", change_aware=False) == 7_431_287
    assert abs(7_431_287 / 7.45e6 - 1) < 0.003


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_shapes_any_t(model: CAMTCR, t: int) -> None:
    opt, sar, days = _inputs(t, b=2)
    with torch.no_grad():
        y = model(opt, sar, days)
        y_nodays = model(opt, sar)
    assert y.shape == (2, 13, H, H)
    assert y.min() > 0 and y.max() < 1
    assert y_nodays.shape == (2, 13, H, H)


def test_other_size_and_errors(model: CAMTCR) -> None:
    opt, sar, days = _inputs(2, size=40)  # multiple of 8, not of 16 or 32
    with torch.no_grad():
        assert model(opt, sar, days).shape == (1, 13, 40, 40)
    opt, sar, days = _inputs(2, size=36)
    with pytest.raises(InputError, match="multiples of 8"):
        model(opt, sar, days)
    opt, sar, days = _inputs(2)
    with pytest.raises(InputError, match="sar must be"):
        model(opt, sar[:, :1], days)
    with pytest.raises(InputError, match="optical must be"):
        model(opt[:, :, :4], sar, days)
    with pytest.raises(InputError, match="days must be"):
        model(opt, sar, days[:, :1])


def test_identical_sar_gives_ones_and_equals_without_ca(model: CAMTCR) -> None:
    opt, sar, days = _inputs(3)
    same = sar[:, -1:].expand_as(sar).clone()
    c = model.change_maps(opt, same)
    assert c.shape == (1, 3, 1, H, H)
    assert (c - 1).abs().max() < 1e-5
    with torch.no_grad():
        y = model(opt, same, days)
        model.change_aware = False
        try:
            y_noca = model(opt, same, days)
            c_noca = model.change_maps(opt, sar)
        finally:
            model.change_aware = True
        assert (y - y_noca).abs().max() < 1e-6
        assert torch.equal(c_noca, torch.ones_like(c_noca))
        # Different SAR at an auxiliary step: change map below 1 there, and a different output.
        c = model.change_maps(opt, sar)
        assert torch.equal(c[:, -1], torch.ones_like(c[:, -1]))
        assert c[:, 0].min() < 0.99 and c.min() >= -1 - 1e-6 and c.max() <= 1 + 1e-6
        changed = same.clone()
        changed[:, 0] = torch.rand_like(changed[:, 0])
        assert (model(opt, changed, days) - y).abs().max() > 1e-4


def test_invalid_sar_step_is_no_information(model: CAMTCR) -> None:
    opt, sar, _ = _inputs(3)
    valid = torch.tensor([[False, True, True]])
    c = model.change_maps(opt, sar, sar_valid=valid)
    assert torch.equal(c[:, 0], torch.ones_like(c[:, 0])) and c[:, 1].min() < 0.99
    c = model.change_maps(opt, sar, sar_valid=torch.tensor([[True, True, False]]))
    assert torch.equal(c, torch.ones_like(c))  # no SAR at the target: nothing to compare with


def test_fusion_weights(model: CAMTCR) -> None:
    opt, sar, days = _inputs(3, b=2)
    with torch.no_grad():
        _c, w, f = model.weights_and_changes(opt, sar, days)
    assert w.shape == (2, 3, H, H) and f.shape == (2, 3, 128, H, H)
    assert (w.sum(dim=1) - 1).abs().max() < 1e-5 and w.min() >= 0
    opt, sar, days = _inputs(1)
    with torch.no_grad():
        _, w, _ = model.weights_and_changes(opt, sar, days)
    assert torch.allclose(w, torch.ones_like(w), atol=1e-6)


def test_region_masks_and_change_term(model: CAMTCR) -> None:
    opt, _, _ = _inputs(2, b=1)
    with torch.no_grad():
        f, masks = model.opt_encoder(opt[0], return_masks=True)
    assert f.shape == (2, 128, H, H) and len(masks) == 9
    for r in masks:
        assert r.shape == (2, 1, H // 4, H // 4) and r.min() > 0 and r.max() < 1
    x = torch.randn(2, 64, 228)
    assert model.opt_encoder.heads[0].change(x, x, 8, 8).abs().max() < 1e-6  # R2 = 0: no change
    r2 = model.opt_encoder.heads[0].change(x, -x, 8, 8)
    assert torch.allclose(r2, torch.full_like(r2, 2.0), atol=1e-6)


def test_forced_unit_mask_equals_without_regs() -> None:
    full = _model()
    plain = _model(region_selection=False)
    result = plain.load_state_dict(full.state_dict(), strict=False)
    assert not result.missing_keys and all(k.startswith("opt_encoder.heads.") for k in result.unexpected_keys)
    ones = torch.ones(1, 1, H // 4, H // 4)
    full.opt_encoder.heads = nn.ModuleList(ForcedHead(ones) for _ in range(9))
    opt, sar, days = _inputs(2)
    with torch.no_grad():
        assert torch.equal(full(opt, sar, days), plain(opt, sar, days))


def test_region_mask_suppresses_cloud_block() -> None:
    """A synthetic cloud block (bright 16×16 px = 4×4 tokens); R = 0 there removes it."""
    m = _model()
    enc = m.opt_encoder
    h = H // 4
    cloud_tokens = torch.zeros(h, h, dtype=torch.bool)
    cloud_tokens[2:6, 2:6] = True
    mask = (~cloud_tokens).float().view(1, 1, h, h)
    g = torch.Generator().manual_seed(3)
    ground = torch.rand(1, 13, H, H, generator=g) * 0.3

    def cloudy(level: float) -> torch.Tensor:
        x = ground.clone()
        x[:, :, 8:24, 8:24] = level
        return x

    seen: list[torch.Tensor] = []
    hook = enc.blocks[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    enc.heads[0] = ForcedHead(mask)  # after block 1: zero the cloud tokens
    try:
        with torch.no_grad():
            enc(cloudy(0.9))
    finally:
        hook.remove()
    tokens = seen[0].reshape(1, h, h, 228)
    assert tokens[0][cloud_tokens].abs().max() == 0  # suppressed at the next block's input
    assert tokens[0][~cloud_tokens].abs().min() > 0

    # Forcing R = 0 at the last head: the cloud's brightness no longer reaches F_opt inside the
    # block (only the un-embedding bias remains), while outside it still does (global attention).
    m2 = _model()
    m2.opt_encoder.heads[8] = ForcedHead(mask)
    with torch.no_grad():
        a, b = m2.opt_encoder(cloudy(0.6)), m2.opt_encoder(cloudy(1.0))
    inside = (a - b)[:, :, 8:24, 8:24].abs().max()
    outside = (a - b)[:, :, :8].abs().max()
    assert inside == 0 and outside > 1e-4


def test_half_mask_changes_next_attention() -> None:
    """Post-norm: scaling tokens by R = 0.5 changes the next block's attention."""
    m = _model()
    enc = m.opt_encoder
    h = H // 4
    half = torch.ones(1, 1, h, h)
    half[..., :4, :] = 0.5
    inputs = []
    hook = enc.blocks[1].register_forward_pre_hook(lambda mod, args: inputs.append(args[0].clone()))
    opt, _, _ = _inputs(1)
    try:
        with torch.no_grad():
            enc.heads[0] = ForcedHead(torch.ones(1, 1, h, h))
            enc(opt[0])
            enc.heads[0] = ForcedHead(half)
            enc(opt[0])
    finally:
        hook.remove()

    def probs(x: torch.Tensor) -> torch.Tensor:
        blk = enc.blocks[1]
        q, k, _ = blk.qkv(x).reshape(1, x.shape[1], 3, 6, 38).permute(2, 0, 3, 1, 4)
        return ((q @ k.transpose(-2, -1)) / 38 ** 0.5).softmax(-1)

    with torch.no_grad():
        assert torch.allclose(inputs[1][:, 4 * h :], inputs[0][:, 4 * h :])
        assert (probs(inputs[0]) - probs(inputs[1])).abs().max() > 1e-4


def test_sdpa_equals_matmul_attention(model: CAMTCR) -> None:
    opt, sar, days = _inputs(2)
    with torch.no_grad():
        y = model(opt, sar, days)
        type(model.opt_encoder.blocks[0]).use_sdpa = False
        try:
            y2 = model(opt, sar, days)
        finally:
            type(model.opt_encoder.blocks[0]).use_sdpa = True
    assert (y - y2).abs().max() < 1e-5


def test_order_and_target(model: CAMTCR) -> None:
    opt, sar, days = _inputs(3)
    perm = [1, 0, 2]  # swap the two auxiliary steps (with their dates)
    with torch.no_grad():
        y = model(opt, sar, days)
        y_perm = model(opt[:, perm], sar[:, perm], days[:, perm])
        other = [0, 2, 1]  # a different step becomes the target
        y_other = model(opt[:, other], sar[:, other], days[:, other])
    assert (y - y_perm).abs().max() < 1e-5
    assert (y - y_other).abs().max() > 1e-3


def test_batch_independence(model: CAMTCR) -> None:
    opt, sar, days = _inputs(2, b=3)
    with torch.no_grad():
        y = model(opt, sar, days)
        y1 = model(opt[1:2], sar[1:2], days[1:2])
    assert (y[1:2] - y1).abs().max() < 1e-5


def test_determinism() -> None:
    m = _model()
    opt, sar, days = _inputs(3)
    with torch.no_grad():
        assert torch.equal(m(opt, sar, days), m(opt, sar, days))
        m.train()
        assert torch.equal(m(opt, sar, days), m(opt, sar, days))  # no dropout anywhere
    assert torch.equal(_model().state_dict()["ltae.query"], m.state_dict()["ltae.query"])


def test_position_code() -> None:
    pe = position_code(2, 3, 228)
    assert pe.shape == (6, 228)
    # token (row 1, col 2) is index 5; first dims: sin(c·ω0) = sin(2), cos(2); then rows.
    assert torch.allclose(pe[5, 0], torch.tensor(2.0).sin()) and torch.allclose(pe[5, 57], torch.tensor(2.0).cos())
    assert torch.allclose(pe[5, 114], torch.tensor(1.0).sin()) and torch.allclose(pe[5, 171], torch.tensor(1.0).cos())
    assert torch.equal(pe[0, :57], torch.zeros(57))


def test_without_sar_variant() -> None:
    m = _model(use_sar=False)
    opt, sar, days = _inputs(2)
    with torch.no_grad():
        y = m(opt, sar, days)
        c = m.change_maps(opt, sar)
    assert y.shape == (1, 13, H, H) and torch.equal(c, torch.ones_like(c))


def test_multiply_adds_match_the_budget() -> None:
    """Cost at (1, T, ·, 256, 256): conv/linear/matmul multiply-adds (torch's counter; fvcore
    adds ≈ 4 G of norm and elementwise ops on top: 453.42 G for T = 3)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cloudrm_engine.models.ca_mtcr import TBlock

    TBlock.use_sdpa = False  # explicit matmuls, as the documented counts use
    try:
        with torch.device("meta"):
            m = create_model("ca_mtcr").eval()
            macs = {}
            for t in (1, 3):
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    m(torch.rand(1, t, 13, 256, 256), torch.rand(1, t, 2, 256, 256), torch.zeros(1, t))
                macs[t] = counter.get_total_flops() / 2e9
                if t == 3:
                    per = counter.get_flop_counts()
                    attention = per["CAMTCR.opt_encoder"][torch.ops.aten.bmm] / 2e9
    finally:
        TBlock.use_sdpa = True
    assert abs(macs[3] - 449.33) < 0.05 and abs(macs[1] - 164.67) < 0.05
    assert abs(attention - 206.56) < 0.01  # attention matmuls, exactly the documented figure


def test_param_groups_and_schedule(model: CAMTCR) -> None:
    from cloudrm_engine.models.ca_mtcr import lr_factor, param_groups

    groups = param_groups(model, lr=1e-4)
    assert [g["lr"] for g in groups] == [1e-4, 1e-5]
    assert sum(p.numel() for p in groups[1]["params"]) == 394_816
    assert sum(p.numel() for g in groups for p in g["params"]) == 7_431_287
    assert [lr_factor(e) for e in (0, 9, 10, 14, 15, 20, 25, 29)] == [1, 1, 0.5, 0.5, 0.25, 0.125, 0.0625, 0.0625]
