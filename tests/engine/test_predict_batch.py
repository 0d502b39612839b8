"""cloudrm predict-batch: a CSV of scenes, restartable, one bad scene does not stop the others,
sharded over processes under torchrun."""

from __future__ import annotations

import csv
import subprocess

import rasterio

from tests.conftest import VENV_BIN, crop_sample, make_checkpoint


def _scenes(tmp_path, n=3):
    rows = []
    for k in range(n):
        sub = tmp_path / f"s{k}"
        sub.mkdir()
        opt, sar = crop_sample(sub, 32 * k, 32 * k, 32, tag=f"scene{k}")
        rows.append((opt.relative_to(tmp_path), sar.relative_to(tmp_path)))
    return rows


def _write_list(path, rows, extra=None):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["optical", "sar", "out"])
        for k, (o, s) in enumerate(rows):
            w.writerow([o, s, f"out_{k}.tif"])
        for row in extra or []:
            w.writerow(row)
    return path


def _log(out_dir):
    with (out_dir / "batch_log.csv").open() as f:
        return list(csv.DictReader(f))


def test_batch_runs_logs_skips_bad_scenes_and_restarts(tmp_path):
    rows = _scenes(tmp_path)
    ckpt = make_checkpoint("mpir4", tmp_path / "mpir4.pt")
    lst = _write_list(tmp_path / "scenes.csv", rows, extra=[[rows[0][0], "missing_s1.tif", "bad.tif"]])
    out_dir = tmp_path / "out"
    cmd = [str(VENV_BIN / "cloudrm"), "predict-batch", str(lst), "--out-dir", str(out_dir), "--model", "mpir4",
           "--checkpoint", str(ckpt), "--device", "cpu", "--no-keep-clear"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr  # one scene failed
    assert "3 done, 0 skipped (already complete), 1 failed of 4 scene(s)" in r.stdout
    log = _log(out_dir)
    assert [x["status"] for x in log] == ["done", "done", "done", "failed"]
    assert "SAR raster 'missing_s1.tif': file not found" in log[3]["message"]
    for k, (opt, _) in enumerate(rows):
        with rasterio.open(tmp_path / opt) as a, rasterio.open(out_dir / f"out_{k}.tif") as b:
            assert (b.crs, b.transform, b.count) == (a.crs, a.transform, 3)
    assert not (out_dir / "bad.tif").exists()
    # restart: the finished scenes are skipped, only the bad one is tried again
    stamp = (out_dir / "out_0.tif").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "0 done, 3 skipped (already complete), 1 failed of 4 scene(s)" in r.stdout
    assert (out_dir / "out_0.tif").stat().st_mtime_ns == stamp
    assert [x["status"] for x in _log(out_dir)[4:]] == ["skipped", "skipped", "skipped", "failed"]


def test_a_broken_output_is_redone(tmp_path):
    rows = _scenes(tmp_path, 1)
    ckpt = make_checkpoint("mpir4", tmp_path / "mpir4.pt")
    lst = _write_list(tmp_path / "scenes.csv", rows)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "out_0.tif").write_bytes(b"not a tiff")  # e.g. copied in half by hand
    r = subprocess.run([str(VENV_BIN / "cloudrm"), "predict-batch", str(lst), "--out-dir", str(out_dir), "--model",
                        "mpir4", "--checkpoint", str(ckpt), "--device", "cpu"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    with rasterio.open(out_dir / "out_0.tif") as ds:
        assert "CLOUDRM_VERSION" in ds.tags()


def test_torchrun_shards_the_scenes_over_processes(tmp_path):
    rows = _scenes(tmp_path, 4)
    ckpt = make_checkpoint("mpir4", tmp_path / "mpir4.pt")
    lst = _write_list(tmp_path / "scenes.csv", rows)
    out_dir = tmp_path / "out"
    r = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "cloudrm_engine.cli",
         "predict-batch", str(lst), "--out-dir", str(out_dir), "--model", "mpir4", "--checkpoint", str(ckpt),
         "--device", "cpu", "--no-keep-clear"],
        capture_output=True, text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = _log(out_dir)
    assert sorted((x["rank"], x["scene"]) for x in log) == [
        ("0", "scene0_s2"), ("0", "scene2_s2"), ("1", "scene1_s2"), ("1", "scene3_s2")]
    assert all(x["status"] == "done" for x in log)
    assert all((out_dir / f"out_{k}.tif").is_file() for k in range(4))
