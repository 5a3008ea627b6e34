"""Helpers for tests that run the real Snakemake workflow in a temporary copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

WORKFLOW_PARTS = ("workflow", "config", "profiles", "envs")


def copy_workflow(repo_root: Path, dest: Path) -> Path:
    """Copy what the workflow needs (not results/) into ``dest`` and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        shutil.copytree(repo_root / part, dest / part)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run snakemake from the venv that runs the tests, with its `smil` on PATH."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(bindir / "snakemake"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
        )
    return proc
