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
def test_default_pipeline_runs_and_is_complete(tmp_path: Path, repo_root: Path) -> None:
    work = copy_workflow(repo_root, tmp_path / "wf")
    snakemake(work, "--cores", "2")
    summary = json.loads((work / "results/models/default.summary.json").read_text())
    assert summary["num_joints"] >= 40
    assert summary["num_vertices"] >= 2000
    assert (work / "results/logs/default_body_model.log").exists()
    assert (work / "results/benchmarks/default_body_model.tsv").exists()
    # A second run has nothing left to do.
    dry = snakemake(work, "-n", "--cores", "2")
    assert "Nothing to be done" in dry.stdout + dry.stderr
