"""CAFR: Cloud-Attentive Reconstruction Framework (cloud-aware SAR fusion).

Paper: T.-A. Bui and T.-T. Le, "Cloud-Aware SAR Fusion for Enhanced Optical Sensing in Space
Missions". Described in docs/models/cafr.md. Official code: github.com/thoailt/Cloud-Removal
(commit f3f35d7, no licence, no checkpoint: read for facts only, nothing copied).

The network is GLF-CR (``RDN_residual_CR``) with the same hyperparameters and parameter names
(docs/models/glf_cr.md), so this file reuses :class:`..glf_cr.GLFCR` and only adds the
repository's attention gate/shift-mask order as an option (docs/models/cafr.md,
"Gate and mask order"). What makes CAFR different is its training signal: a
cloud-mask-weighted loss (``..losses.cafr``) on the DSen2-CR mask
(``..data.cloudmask.cafr_cloud_mask``); inference needs neither.

Parameters: 14,827,373, identical to GLF-CR (per module: docs/models/cafr.md, "Parameter counts").
"""

from __future__ import annotations

from ._registry import register_model
from .glf_cr import GLFCR, DenseSTLLayer, DualWindowAttention, SGCIBlock, remap_official_state_dict


class RepoOrderWindowAttention(DualWindowAttention):
    """Dual window attention with the CAFR repository's gate/mask order.

    The gate is computed from the *unmasked* logits, the optical logits move towards the SAR
    ones, and only then is the shifted-window mask added, to the optical logits only: the SAR
    stream attends across shift-region borders. Same parameters as the GLF-CR order; the
    forward pass is GLF-CR's with the order switched (:attr:`mask_after_gate`).
    """

    mask_after_gate = True


class CAFR(GLFCR):
    """CAFR network = GLF-CR dual-stream network.

    ``forward(optical, sar)``: optical (B, 13, H, W) in [0, 1] (S2 L1C DN / 10000, SEN12MS-CR
    band order), SAR (B, 2, H, W) in [0, 1] (VV, VH). Returns (B, 13, H, W): the input plus a
    learned residual, no output activation, not clamped. H and W must be multiples of 16;
    shift masks are built per forward for the actual size, so weights trained on 128 px crops
    run on any such size.

    Args:
        repo_gate_order: use the official repository's attention order (gate on unmasked
            logits, mask on the optical stream only) instead of GLF-CR's (default).
        **kwargs: :class:`GLFCR` hyperparameters (defaults = the repository's = GLF-CR's).
    """

    def __init__(self, repo_gate_order: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.repo_gate_order = bool(repo_gate_order)
        if self.repo_gate_order:
            for block in self.RDBs:
                assert isinstance(block, SGCIBlock)
                for layer in block.convs:
                    assert isinstance(layer, DenseSTLLayer)
                    # same parameter set and names, only forward differs
                    old = layer.attn
                    layer.attn = RepoOrderWindowAttention(old.qkv.in_features, old.window, old.heads)


@register_model("cafr", official_remap=remap_official_state_dict)
def cafr(**kwargs: object) -> CAFR:
    """CAFR with the repository hyperparameters; kwargs override (e.g. repo_gate_order)."""
    return CAFR(**kwargs)  # type: ignore[arg-type]
