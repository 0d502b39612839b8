"""Checkpoint format: metadata round trip, weights_only loading, the bundled demo checkpoint."""

import pickle

import pytest
import torch

from cloudrm_engine.errors import CheckpointError
from cloudrm_engine.io.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from cloudrm_engine.models import create_model, model_card
from tests.conftest import DEMO_CKPT


def test_round_trip_keeps_metadata_and_weights(tmp_path):
    torch.manual_seed(0)
    m = create_model("glf_cr", optical_bands=4)
    ckpt = Checkpoint(
        model="glf_cr", config={"optical_bands": 4}, state_dict=m.state_dict(),
        bands={"optical": ["B", "G", "R", "NIR"], "sar": ["VV", "VH"]},
        normalisation=model_card("glf_cr").normalisation, trained_on="unit test",
        training={"steps": 3, "scores": {"psnr": 20.5}}, created="2026-11-23",
    )
    for half, tol in ((False, 0.0), (True, 1e-3)):
        path = save_checkpoint(tmp_path / f"c{half}.pt", ckpt, half=half)
        back = load_checkpoint(path)
        assert (back.model, back.config, back.bands, back.trained_on) == (
            "glf_cr", {"optical_bands": 4}, ckpt.bands, "unit test")
        assert back.training == {"steps": 3, "scores": {"psnr": 20.5}}
        w = back.state_dict["SFENet1.weight"]
        assert w.dtype == torch.float32
        torch.testing.assert_close(w, m.state_dict()["SFENet1.weight"], atol=tol, rtol=tol)
        assert build_model(back).optical_bands == 4
    assert (tmp_path / "cFalse.pt").stat().st_mode & 0o777 == 0o644


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"network": Evil()}, path)
    refused = r"evil\.pt is not a readable weights-only PyTorch checkpoint: it contains objects that weights-only"
    with pytest.raises(CheckpointError, match=refused + r" loading refuses \(print\)"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a readable weights-only PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_wrong_weights_are_named(tmp_path):
    m = create_model("glf_cr")
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("UPNet")}
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"4 missing keys \(UPNet.0.weight.*1 unexpected keys \(extra.weight"):
        build_model(load_checkpoint(tmp_path / "partial.pth"))


def test_bundled_demo_checkpoint_is_real_and_labelled():
    ckpt = load_checkpoint(DEMO_CKPT)
    assert ckpt.model == "glf_cr"
    assert ckpt.bands["optical"] == list(model_card("glf_cr").optical_bands)
    assert ckpt.trained_on.startswith("DEMO ONLY") and "Not trained on SEN12MS-CR" in ckpt.trained_on
    rec = ckpt.training
    assert rec["steps"] >= 100 and rec["seconds"] > 0
    # it learned something on the held-out quarter: less error under synthetic cloud than the input
    before, after = rec["held_out_after"]["input"], rec["held_out_after"]["model"]
    assert after["mae_under_cloud"] < before["mae_under_cloud"]
    assert rec["loss_last_10"] < rec["loss_first_10"]
    build_model(ckpt)  # loads strictly


def test_shape_mismatch_is_a_checkpoint_error(tmp_path):
    state = create_model("glf_cr").state_dict()
    state["UPNet.2.weight"] = torch.zeros(4, 64, 3, 3)  # a 4-band head on a 13-band body
    torch.save({"network": state}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"mixed.pth does not fit model 'glf_cr'.*UPNet.2.weight"):
        build_model(load_checkpoint(tmp_path / "mixed.pth"))
