"""``smil body info`` and ``smil body build-default``, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smil.body.io import load_model, model_sha256
from smil.cli import main
from smil.errors import UnsafePickleError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stick_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_STICK.pkl"


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.fixture()
def evil_pickle(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(target)}))
    return path, target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "smil", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_info_table(stick_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["body", "info", str(stick_path)]) == 0
    out = capsys.readouterr().out
    assert "vertices   3020" in out and "faces      6019" in out
    assert "joints     55" in out and "betas      5" in out
    assert "scaledirs  5 × 55 × 3" in out and "transdirs  5 × 55 × 3" in out
    assert model_sha256(stick_path) in out
    assert "bbox min" in out and "bbox size" in out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["0", "b_t", "-"] for line in lines)
    assert any(line.split()[:4] == ["1", "b_a_1", "0", "(b_t)"] for line in lines)


def test_info_json_and_output_file(stick_path: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["body", "info", str(stick_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["num_vertices"], info["num_faces"], info["num_joints"], info["num_betas"]) == (
        3020, 6019, 55, 5)
    assert info["scaledirs"] == [5, 55, 3] and info["posedirs"] is None
    assert info["sha256"] == model_sha256(stick_path)
    template = load_model(stick_path)["v_template"]
    np.testing.assert_allclose(info["bounding_box"]["min"], template.min(0))
    np.testing.assert_allclose(info["bounding_box"]["max"], template.max(0))
    assert info["joints"][0] == {"index": 0, "name": "b_t", "parent": -1, "parent_name": None}
    assert info["joints"][7]["parent_name"] == "l_1_co_r"

    out = tmp_path / "sub" / "info.json"
    assert main(["body", "info", str(stick_path), "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == info
    assert [p.name for p in out.parent.iterdir()] == ["info.json"]  # no temporary left


def test_info_as_subprocess(stick_path: Path, fixtures_dir: Path) -> None:
    result = run_cli("body", "info", str(fixtures_dir / "models" / "SMILy_Mouse_static_joints.pkl"),
                     "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_joints"] == 31 and info["static_joints"] is True
    assert info["scaledirs"] is None and info["joint_source"] == "J (static)"


def test_missing_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.pkl"
    assert main(["body", "info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"smil: error: {missing}: no such file"]

    result = run_cli("body", "info", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"smil: error: {missing}: no such file"]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_malicious_pickle_is_refused_by_the_cli(evil_pickle: tuple[Path, Path],
                                                capsys: pytest.CaptureFixture) -> None:
    path, target = evil_pickle
    assert main(["body", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "system" in err[0]

    result = run_cli("body", "info", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_debug_shows_the_traceback(evil_pickle: tuple[Path, Path]) -> None:
    path, target = evil_pickle
    with pytest.raises(UnsafePickleError):
        main(["--debug", "body", "info", str(path)])
    result = run_cli("--debug", "body", "info", str(path))
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert not target.exists()


def test_build_default_writes_a_loadable_model(tmp_path: Path) -> None:
    pytest.importorskip("smil.body.default_model")
    out = tmp_path / "default.pkl"
    assert main(["body", "build-default", str(out), "--seed", "3"]) == 0
    data = load_model(out)
    V = data["v_template"].shape[0]
    assert data["v_template"].shape == (V, 3) and data["weights"].shape[0] == V
    again = tmp_path / "again.pkl"
    assert main(["body", "build-default", str(again), "--seed", "3"]) == 0
    assert again.read_bytes() == out.read_bytes()  # same seed, same bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
