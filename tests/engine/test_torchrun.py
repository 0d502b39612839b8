"""``torchrun --standalone --nproc_per_node=2 -m cloudrm_engine.cli train``: gloo on the CPU, per-process
batches, rank-0 files; 2 processes × batch 1 train the same weights as 1 process × batch 2."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest
import torch

from cloudrm_engine.io.checkpoint import load_checkpoint
from cloudrm_engine.models import create_model
from tests.conftest import REPO, VENV_BIN

from .layouts import write_sen12mscr_seasonal


def _log(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    data = tmp_path / "data"
    write_sen12mscr_seasonal(data, [("spring", "1", [1, 2, 3, 4]), ("spring", "17", [1, 2, 3])])
    # MMCANet has no stochastic layer (no dropout / drop-path) and no batch statistics
    args = ["train", "--model", "mmcanet", "--data", str(data), "--epochs", "2", "--crop", "16", "--resize", "0",
            "--val-crop", "0", "--device", "cpu", "--threads", "1", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "cloudrm_engine.cli", *args,
         "--batch-size", "1", "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "× 2 process(es)" in two.stderr and two.stdout.count("run folder") == 1  # rank 0 reports once
    one = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "cloudrm_engine.cli", *args, "--batch-size", "2",
         "--out", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "two" / "last.pt"), load_checkpoint(tmp_path / "one" / "last.pt")
    assert a.training["steps"] == b.training["steps"] == 4 and a.training["processes"] == 2
    diff = max((a.state_dict[k] - b.state_dict[k]).abs().max().item() for k in a.state_dict)
    assert diff <= 1e-5
    torch.manual_seed(7)
    init = create_model("mmcanet").state_dict()
    moved = max((a.state_dict[k] - init[k]).abs().max().item() for k in init)
    assert moved > 30 * 1e-5  # 4 Adam steps of 1e-4 moved the weights 30× the tolerance: not trivial
    ra, rb = _log(tmp_path / "two" / "log.csv"), _log(tmp_path / "one" / "log.csv")
    for x, y in zip(ra, rb, strict=True):
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-5)
        # validation is shared between the processes (3 images: 2 + 1) and summed
        assert float(x["val_psnr"]) == pytest.approx(float(y["val_psnr"]), abs=1e-3)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
