"""Rule-based Sentinel-2 L1C cloud (and shadow) detector of DSen2-CR / SEN12MS-CR.

GLF-CR used it for the cloud-cover statistics of its test set, CAFR for its loss mask M′
(paper eq. 13-16); docs/data.md, "Rule cloud mask (DSen2-CR)", describes both. The
algorithm is the one of DSen2-CR's ``feature_detectors.py`` as used by the CAFR
repository; it is not Sen2Cor. Written with torch pooling ops so it runs on whole tiles
on CPU or GPU; a test checks it against the scipy formulation.

Two input scales exist:

- ``cloud_score`` / ``cloud_mask``: reflectance in [0, 1] (DN / 10000), unclipped;
- ``cafr_cloud_mask`` / ``cafr_cloud_score`` / ``shadow_mask``: raw L1C DN (reflectance ×
  10000), the form rasters come in; they divide by 10000 themselves.

Both want all 13 bands in SEN12MS-CR order (B1 … B8, B8A, B9, B10, B11, B12): the rule needs
B1 and the cirrus band B10, which Sentinel-2 L2A products do not have.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .bands import S2_BANDS

_I = {b: i for i, b in enumerate(S2_BANDS)}

CLOUD_THRESHOLD = 0.2  # T_cloud: cloud where the filtered score ≥ 0.2 (paper eq. 14)
NDSI_SNOW = 0.6  # paper eq. 16: pixels with NDSI > 0.6 are snow, not cloud
METHODS = ("repo", "paper")


def _rescale(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """r(x, lo, hi) = (x − lo) / (hi − lo), deliberately not clipped (as DSen2-CR)."""
    return (x - lo) / (hi - lo)


def _normalized_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    den = a + b
    # DSen2-CR replaces a zero denominator by 0.001 (so 0/0 gives NDSI 0, not NaN)
    return (a - b) / torch.where(den == 0, torch.full_like(den, 0.001), den)


def _as_batch(s2: np.ndarray | torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(s2)
    shape = tuple(x.shape)
    if not x.is_floating_point() or x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != len(S2_BANDS):
        raise InputError(
            f"{what} needs a (13, H, W) or (B, 13, H, W) Sentinel-2 L1C array in band order "
            f"{', '.join(S2_BANDS)}; got shape {shape}"
        )
    return x, squeeze


def ndsi(s2: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalised difference snow index (B3 − B11) / (B3 + B11) (paper eq. 15).

    Args:
        s2: (13, H, W) or (B, 13, H, W), any common scale (the index is scale free).

    Returns:
        (H, W) or (B, H, W); a zero denominator counts as 0.001.
    """
    x, squeeze = _as_batch(s2, "ndsi")
    out = _normalized_difference(x[:, _I["B3"]], x[:, _I["B11"]])
    return out[0] if squeeze else out


def cloud_ramps(s2: np.ndarray | torch.Tensor, moisture: bool = False) -> dict[str, torch.Tensor]:
    """The unclipped linear tests whose minimum (with 1) is the raw cloud score.

    Args:
        s2: (13, H, W) or (B, 13, H, W) reflectance (DN / 10000).
        moisture: also return DSen2-CR's optional moisture test (off in every paper).

    Returns:
        Dict of (H, W) or (B, H, W) tensors: ``B2`` = r(B2, 0.1, 0.5), ``B1`` = r(B1, 0.1, 0.3),
        ``B1+B10`` = r(B1 + B10, 0.15, 0.2), ``B4+B3+B2`` = r(B4 + B3 + B2, 0.2, 0.8),
        ``snow`` = r(NDSI, 0.8, 0.6) and, if asked, ``moisture`` = r(NDMI, −0.1, 0.1).
    """
    x, squeeze = _as_batch(s2, "cloud_ramps")
    b = {k: x[:, i] for k, i in _I.items()}
    ramps = {
        "B2": _rescale(b["B2"], 0.1, 0.5),  # clouds are bright in blue
        "B1": _rescale(b["B1"], 0.1, 0.3),  # ... and in the aerosol band
        "B1+B10": _rescale(b["B1"] + b["B10"], 0.15, 0.2),  # ... aerosol plus cirrus
        "B4+B3+B2": _rescale(b["B4"] + b["B3"] + b["B2"], 0.2, 0.8),  # ... in all visible bands
    }
    if moisture:
        ramps["moisture"] = _rescale(_normalized_difference(b["B8"], b["B11"]), -0.1, 0.1)
    ramps["snow"] = _rescale(_normalized_difference(b["B3"], b["B11"]), 0.8, 0.6)  # not snow
    return {k: v[0] for k, v in ramps.items()} if squeeze else ramps


def _closing_and_box(score: torch.Tensor) -> torch.Tensor:
    """scipy grey_closing(5×5) then convolve2d(7×7 box / 49, 'same', zero fill): (B, H, W)."""
    s = score.unsqueeze(1)
    # Grey closing = dilation then erosion. scipy's default 'reflect' border and our edge
    # replication give the same max/min: every reflected index lies inside the 5×5 window.
    s = F.max_pool2d(F.pad(s, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    s = -F.max_pool2d(F.pad(-s, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    # zero-filled 'same' mean: borders see zeros, so a uniform cloud drops to 16/49 at corners
    s = F.avg_pool2d(s, 7, stride=1, padding=3, count_include_pad=True)
    return s.squeeze(1)


def cloud_score(s2: np.ndarray | torch.Tensor, moisture: bool = False) -> torch.Tensor:
    """DSen2-CR cloud score in [1e-5, 1] per pixel (ramps, 5×5 closing, 7×7 box mean, clip).

    Args:
        s2: (13, H, W) or (B, 13, H, W) reflectance (DN / 10000, not clipped), SEN12MS-CR
            band order. float64 input is computed in float64, anything else in float32.
        moisture: add the optional moisture test (off in DSen2-CR, GLF-CR and CAFR).

    Returns:
        (H, W) or (B, H, W) score; ≥ 0.2 means cloud.
    """
    x, squeeze = _as_batch(s2, "cloud_score")
    ramps = cloud_ramps(x, moisture=moisture)
    score = torch.ones_like(x[:, 0])
    for r in ramps.values():
        score = torch.minimum(score, r)
    out = _closing_and_box(score).clamp(1e-5, 1.0)
    return out[0] if squeeze else out


def _paper_mask(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Paper eq. 13-16 literally: min of four ramps > T, then × [NDSI ≤ 0.6], no filtering."""
    ramps = cloud_ramps(x)
    score = torch.ones_like(x[:, 0])
    for k in ("B2", "B1", "B1+B10", "B4+B3+B2"):
        score = torch.minimum(score, ramps[k])
    snow_free = _normalized_difference(x[:, _I["B3"]], x[:, _I["B11"]]) <= NDSI_SNOW
    return (score > threshold) & snow_free


def cloud_mask(
    s2: np.ndarray | torch.Tensor,
    threshold: float = CLOUD_THRESHOLD,
    method: str = "repo",
    moisture: bool = False,
) -> np.ndarray:
    """Boolean cloud mask (True = cloud) from reflectance.

    Args:
        s2: (13, H, W) or (B, 13, H, W) reflectance (DN / 10000, not clipped).
        threshold: T_cloud; ``repo`` marks score ≥ T, ``paper`` marks score > T (eq. 14).
        method: ``repo`` (default): :func:`cloud_score` with its soft snow ramp, 5×5 closing and
            7×7 box filter (DSen2-CR, the CAFR code); ``paper``: eq. 13-16 as printed, i.e.
            the four brightness ramps, then a hard NDSI ≤ 0.6 cut, no morphology.
        moisture: optional moisture test (``repo`` only).

    Returns:
        (H, W) or (B, H, W) numpy bool array.
    """
    if method == "repo":
        return (cloud_score(s2, moisture=moisture) >= threshold).cpu().numpy()
    if method == "paper":
        x, squeeze = _as_batch(s2, "cloud_mask")
        m = _paper_mask(x, threshold)
        return (m[0] if squeeze else m).cpu().numpy()
    raise ValueError(f"cloud mask method must be one of {', '.join(METHODS)}, got {method!r}")


def _dn_to_reflectance(dn: np.ndarray | torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    x, squeeze = _as_batch(dn, what)
    if torch.isnan(x).any():
        # no-data pixels take the band's mean before the score is computed
        flat = x.flatten(2)
        mean = torch.nanmean(flat, dim=2, keepdim=True).nan_to_num(0.0)
        x = torch.where(torch.isnan(flat), mean.expand_as(flat), flat).view_as(x)
    return x / 10000.0, squeeze


def cafr_cloud_score(dn: np.ndarray | torch.Tensor, moisture: bool = False) -> torch.Tensor:
    """:func:`cloud_score` of a raw L1C DN array (reflectance × 10000, not clipped).

    Args:
        dn: (13, H, W) or (B, 13, H, W) DN, SEN12MS-CR band order; NaN → band mean.
        moisture: optional moisture test (off in the paper and the repo).

    Returns:
        (H, W) or (B, H, W) torch score in [1e-5, 1] (float64 if ``dn`` is float64).
    """
    x, squeeze = _dn_to_reflectance(dn, "cafr_cloud_score")
    out = cloud_score(x, moisture=moisture)
    return out[0] if squeeze else out


def cafr_cloud_mask(
    dn: np.ndarray | torch.Tensor,
    threshold: float = CLOUD_THRESHOLD,
    method: str = "repo",
    moisture: bool = False,
) -> np.ndarray:
    """CAFR cloud mask M′ of a Sentinel-2 L1C DN array (paper eq. 13-16; docs/models/cafr.md, "Cloud mask").

    Computed on the raw, unclipped DN of the whole patch (compute it before cropping:
    zero-filled filtering erodes clouds at patch borders).

    Args:
        dn: (13, H, W) or (B, 13, H, W) DN (reflectance × 10000, e.g. uint16 L1C), bands
            B1 … B8, B8A, B9, B10, B11, B12; NaN pixels take the band mean.
        threshold: T_cloud, default 0.2.
        method: ``repo`` (default, DSen2-CR algorithm of the CAFR code) or ``paper``
            (hard NDSI ≤ 0.6 cut, no morphology); see :func:`cloud_mask`.
        moisture: optional DSen2-CR moisture test (``repo`` only, off by default).

    Returns:
        (H, W) or (B, H, W) numpy bool array, True = cloud.
    """
    x, squeeze = _dn_to_reflectance(dn, "cafr_cloud_mask")
    m = cloud_mask(x, threshold=threshold, method=method, moisture=moisture)
    return m[0] if squeeze else m


def shadow_mask(dn: np.ndarray | torch.Tensor) -> np.ndarray:
    """DSen2-CR cloud-shadow detector on a DN array (not part of the CAFR mask; docs/data.md, "Shadow test").

    CSI = (B8 + B11) / 2; T3 = min CSI + ¾ (mean CSI − min CSI); T4 = min B2 + ⅚ (mean B2 −
    min B2); shadow where CSI < T3 and B2 < T4, then a 5×5 median filter with zero fill
    (scipy ``medfilt2d``). Thresholds are per image, so results depend on the patch extent.

    Args:
        dn: (13, H, W) or (B, 13, H, W) DN, SEN12MS-CR band order.

    Returns:
        (H, W) or (B, H, W) numpy bool array, True = shadow.
    """
    x, squeeze = _dn_to_reflectance(dn, "shadow_mask")
    csi = (x[:, _I["B8"]] + x[:, _I["B11"]]) / 2
    blue = x[:, _I["B2"]]

    def level(v: torch.Tensor, t: float) -> torch.Tensor:
        lo = v.flatten(1).min(1).values
        return (lo + t * (v.flatten(1).mean(1) - lo)).view(-1, 1, 1)

    raw = ((csi < level(csi, 3 / 4)) & (blue < level(blue, 5 / 6))).to(x.dtype)
    b, h, w = raw.shape
    # Median of 25 values of {0, 1} with zero fill: shadow iff at least 13 of 25 are shadow.
    votes = F.avg_pool2d(raw.unsqueeze(1), 5, stride=1, padding=2, count_include_pad=True) * 25
    out = (votes.squeeze(1) > 12.5).view(b, h, w).cpu().numpy()
    return out[0] if squeeze else out
