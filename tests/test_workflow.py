"""The real Snakemake workflow: lint, formatting, and a full run of the default pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_utils import copy_workflow, snakemake


def test_snakemake_lint_is_clean(repo_root: Path) -> None:
    proc = snakemake(repo_root, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_snakefmt_check_is_clean(repo_root: Path) -> None:
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "snakefmt"), "--check", "workflow"], cwd=repo_root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_schema_rejects_unknown_key(tmp_path: Path, repo_root: Path) -> None:
    work = copy_workflow(repo_root, tmp_path / "wf")
    cfg = work / "config" / "config.yaml"
    cfg.write_text(cfg.read_text() + "\nnot_a_key: 1\n")
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    assert "not_a_key" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_pipeline_runs_and_is_complete(repo_root: Path, tmp_path_factory) -> None:
    """Every rule of the default pipeline runs (on the default config made tiny) and a second run
    has nothing left to do."""
    from test_incremental import tiny_local_run

    work = tiny_local_run(repo_root, tmp_path_factory)
    summary = json.loads((work / "results/models/default.summary.json").read_text())
    assert summary["num_joints"] >= 40
    assert summary["num_vertices"] >= 2000
    for exp in ("tiny_single", "tiny_multi"):
        assert (work / f"results/experiments/{exp}/model.pt").stat().st_size > 0
        assert (work / f"results/experiments/{exp}/eval/metrics.json").is_file()
    for ds in ("synth_single", "synth_multi"):
        assert (work / f"results/datasets/{ds}/dataset.h5").is_file()
        assert (work / f"results/datasets/{ds}/check_gt.json").is_file()
    assert (work / "results/report/index.html").stat().st_size > 10000
    assert (work / "results/logs/default_body_model.log").exists()
    assert (work / "results/benchmarks/default_body_model.tsv").exists()
    dry = snakemake(work, "-n", "--cores", "2")
    assert "Nothing to be done" in dry.stdout + dry.stderr
