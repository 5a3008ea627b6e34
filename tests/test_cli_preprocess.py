"""`smil preprocess` and `smil dataset info` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_preprocess import make_manifest

from smil.cli import main
from smil.data.preprocess import SUMMARY_NAME


def test_preprocess_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=6, num_views=2)
    out = tmp_path / "ds" / "dataset.h5"
    code = main(["preprocess", str(manifest), str(out), "--image-size", "48", "--padding", "1.3",
                 "--jpeg-quality", "85", "--split", "0.5,0.25,0.25", "--seed", "2"])
    assert code == 0
    cap = capsys.readouterr()
    assert f"wrote {out}: 6 samples, 12 views" in cap.out
    assert "preprocess: 6/6 samples" in cap.err  # plain progress lines when stderr is not a terminal
    assert (out.parent / SUMMARY_NAME).is_file()

    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("schema version   1", "samples (N)      6", "views (V)        2: cam0, cam1",
                     "joints (J)       6", "image size       48×48", "train 3, val"):
        assert expected in text, text

    assert main(["dataset", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_samples"] == 6 and info["camera_names"] == ["cam0", "cam1"]
    assert sum(info["split_sizes"].values()) == 6
    assert info["attrs"]["preprocess_settings"]["jpeg_quality"] == 85
    assert info["attrs"]["split_seed"] == 2


def test_bad_sample_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=3)
    (tmp_path / "m" / "s2_v0.jpg").unlink()
    out = tmp_path / "d.h5"
    assert main(["preprocess", str(manifest), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smil: error: ") and "s2_v0.jpg" in err[0]
    assert not out.exists()

    assert main(["preprocess", str(manifest), str(out), "--quiet", "--skip-bad"]) == 0
    assert "skipped 1 bad samples (image not found: 1)" in capsys.readouterr().out
    assert out.exists()


def test_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=1)
    assert main(["preprocess", str(manifest), str(tmp_path / "d.h5"), "--padding", "0.5"]) == 2
    assert "padding" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", str(manifest), str(tmp_path / "d.h5"), "--split", "0.8,0.3"])
    assert exc.value.code == 2


def test_truncated_dataset_exit_2_without_traceback(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=4)
    out = tmp_path / "d.h5"
    assert main(["preprocess", str(manifest), str(out), "--quiet", "--image-size", "32"]) == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) * 2 // 3])
    proc = subprocess.run([sys.executable, "-m", "smil", "dataset", "info", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "truncated or corrupt" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_preprocess_and_dataset_info_run_without_torch(tmp_path: Path) -> None:
    """`smil preprocess` needs OpenCV, numpy and h5py only: the command line does not import torch
    (2–3 s of start-up per call, and a heavier process for the preprocessing workers to fork)."""
    manifest = make_manifest(tmp_path / "m", num_samples=4)
    out = tmp_path / "d.h5"
    script = (
        "import sys\n"
        "from smil.cli import main\n"
        f"assert main(['preprocess', {str(manifest)!r}, {str(out)!r}, '--image-size', '32', '--quiet']) == 0\n"
        f"assert main(['dataset', 'info', {str(out)!r}]) == 0\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.is_file()
