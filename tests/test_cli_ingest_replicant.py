"""``smil ingest replicant`` through the real command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smil.cli import main
from smil.data.manifest import iter_manifest, read_manifest_header


@pytest.fixture(scope="module")
def old_batch(fixtures_dir: Path) -> Path:
    return fixtures_dir / "replicant" / "SMIL"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644)
    dst.chmod(0o755)
    return dst


def test_ingest_writes_a_manifest_and_prints_one_summary_line(old_batch, fixtures_dir, tmp_path, capsys):
    out = tmp_path / "results" / "datasets" / "ants" / "manifest.jsonl"
    model = fixtures_dir / "models" / "SMILy_STICK.pkl"
    assert main(["ingest", "replicant", str(old_batch), "--out", str(out), "--body-model", str(model)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    assert printed[0].startswith(f"wrote 10 samples (10 views) from 10 files to {out}")
    assert "reprojection median 0.000 px" in printed[0]
    header = read_manifest_header(out)
    assert header.source_kind == "replicant" and header.world_unit_m == 0.01 and len(header.joint_names) == 55
    samples = list(iter_manifest(out))
    assert [s.sample_id for s in samples] == [f"SMIL_{i:02d}" for i in range(10)]
    assert all(Path(s.views[0].image["path"]).is_file() for s in samples)
    assert not list(out.parent.glob(".*tmp"))  # no temporary file left behind


def test_bad_input_is_one_error_line_and_keeps_the_old_manifest(old_batch, tmp_path, capsys):
    batch = _copy(old_batch, tmp_path / "SMIL")
    (batch / "SMIL_04.json").write_text("{ broken")
    out = tmp_path / "manifest.jsonl"
    out.write_text("previous manifest\n")
    assert main(["ingest", "replicant", str(batch), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "SMIL_04.json" in err[0] and "not valid JSON" in err[0] and "--skip-bad" in err[0]
    )
    assert out.read_text() == "previous manifest\n"

    assert main(["ingest", "replicant", str(batch), "--out", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 9 samples" in printed and "skipped 1 bad files" in printed
    header = read_manifest_header(out)
    assert header.info["skipped_bad"] == 1 and "SMIL_04.json" in header.info["bad_reasons"][0]
    assert len(list(iter_manifest(out))) == 9


def test_unknown_joint_in_the_map_is_an_error(old_batch, fixtures_dir, tmp_path, capsys):
    table = tmp_path / "map.csv"
    table.write_text("source,joint\nb_t,thorax\n")
    model = fixtures_dir / "models" / "SMILy_STICK.pkl"
    code = main(
        [
            "ingest",
            "replicant",
            str(old_batch),
            "--out",
            str(tmp_path / "m.jsonl"),
            "--body-model",
            str(model),
            "--joint-map",
            str(table),
        ]
    )
    assert code == 2
    assert "unknown joint name 'thorax'" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()


def test_joint_map_and_group_by_batch(old_batch, fixtures_dir, tmp_path, capsys):
    table = tmp_path / "map.csv"
    table.write_text("joint,source\nb_h,b_h\nb_t,b_t\n")
    model = fixtures_dir / "models" / "SMILy_STICK.pkl"
    out = tmp_path / "m.jsonl"
    args = ["ingest", "replicant", str(old_batch), "--out", str(out), "--body-model", str(model)]
    assert main([*args, "--joint-map", str(table), "--group-by", "batch", "--no-mask-occlusion"]) == 0
    assert "53 of 55 joints missing" in capsys.readouterr().out
    header = read_manifest_header(out)
    assert len(header.info["joint_mapping"]["missing_joints"]) == 53
    samples = list(iter_manifest(out))
    assert {s.group for s in samples} == {"SMIL"}
    vis = samples[0].views[0].visibility
    names = header.joint_names
    assert vis[names.index("b_t")] == 1 and vis[names.index("b_h")] == 1 and vis.sum() == 2


def test_smil_help_lists_the_replicant_ingest(capsys):
    with pytest.raises(SystemExit) as done:
        main(["ingest", "replicant", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--body-model" in out and "--skip-bad" in out and "DIR" in out
