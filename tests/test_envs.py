"""The conda environments of the workflow's rules, checked without conda.

CI has no conda, so the workflow runs there with the venv's `smil`. These tests check what conda
would be given: every rule that runs a command names an env file under envs/; each file has its
channels, pins Python 3.11, and installs this checkout through pip; and the pip part of the file,
built the way conda builds it (a requirements file beside Snakemake's copy of the env, pip run in
that folder, PYTHONPATH cleared as Snakemake clears it in conda jobs), gives an environment in
which `smil` imports from this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

#: Loads the workflow with the Snakemake API, as `snakemake` does before it builds any env, and
#: prints each rule's conda env file and shell command plus the SMIL_ROOT the workflow sets.
LOAD_WORKFLOW = r"""
import json, os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings

snakefile, workdir = Path(sys.argv[1]), Path(sys.argv[2])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=snakefile, workdir=workdir)
    rules = {}
    for rule in workflow._workflow.rules:
        env = rule.conda_env
        if env is not None and not callable(env):
            env = os.path.realpath(rule.basedir.join(env).get_path_or_uri(secret_free=True))
        elif callable(env):
            env = "<function>"
        rules[rule.name] = {"conda": env, "shell": rule.shellcmd}
print("@@" + json.dumps({"rules": rules, "SMIL_ROOT": os.environ.get("SMIL_ROOT")}))
"""

PYTHON_PIN = re.compile(r"^python\s*==?\s*3\.11(\.\d+)?$")
CONDA_PIN = re.compile(r"^[A-Za-z0-9_.-]+\s*(==?|>=|<=|~=)\s*\d")
PIP_PIN = re.compile(r"^[A-Za-z0-9_.\[\],-]+\s*==\s*\d")
PROJECT_LINES = {"-e ${SMIL_ROOT}", "-c ${SMIL_ROOT}/requirements.lock"}


@pytest.fixture(scope="module")
def workflow_envs(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("envs-workdir")
    shutil.copytree(repo_root / "config", workdir / "config")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WORKFLOW, str(repo_root / "workflow" / "Snakefile"), str(workdir)],
        env={k: v for k, v in os.environ.items() if k != "SMIL_ROOT"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@"))
    return json.loads(line[2:])


def _env_files(workflow_envs: dict) -> list[Path]:
    return sorted({Path(r["conda"]) for r in workflow_envs["rules"].values() if r["conda"]})


def _pip_lines(env: dict) -> list[str]:
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict) and "pip" in dep:
            return [str(x) for x in dep["pip"] or []]
    return []


def test_every_rule_that_runs_a_command_has_an_env_file_in_envs(workflow_envs: dict, repo_root: Path) -> None:
    envs_dir = (repo_root / "envs").resolve()
    commands = {name: r for name, r in workflow_envs["rules"].items() if r["shell"]}
    assert commands, "the workflow has no rule with a shell command"
    for name, rule in commands.items():
        assert rule["conda"], f"rule {name} runs `{rule['shell'][:40]}...` but has no conda: directive"
        assert rule["conda"] != "<function>", f"rule {name}: conda: must name a file that can be checked"
        path = Path(rule["conda"])
        assert path.parent == envs_dir, f"rule {name}: conda env {path} is not in envs/"
        assert path.is_file(), f"rule {name}: conda env {path} does not exist"


def test_no_env_file_is_unused(workflow_envs: dict, repo_root: Path) -> None:
    used = set(_env_files(workflow_envs))
    present = {p.resolve() for p in (repo_root / "envs").glob("*.y*ml")}
    assert present - used == set(), "env files no rule uses"


def test_env_files_pin_python_and_install_this_checkout(workflow_envs: dict) -> None:
    for path in _env_files(workflow_envs):
        env = yaml.safe_load(path.read_text())
        channels = env.get("channels") or []
        assert "conda-forge" in channels, f"{path}: field 'channels' must list conda-forge"
        deps = env.get("dependencies") or []
        conda_deps = [str(d).strip() for d in deps if not isinstance(d, dict)]
        assert any(PYTHON_PIN.match(d) for d in conda_deps), f"{path}: expected python=3.11 in dependencies"
        assert any(d.split("=")[0].split(">")[0].strip() == "pip" for d in conda_deps), f"{path}: pip missing"
        for dep in conda_deps:
            assert CONDA_PIN.match(dep), f"{path}: dependency {dep!r} has no version"
        pip = _pip_lines(env)
        assert PROJECT_LINES <= set(pip), f"{path}: the pip section must contain {sorted(PROJECT_LINES)}"
        for line in set(pip) - PROJECT_LINES:
            assert PIP_PIN.match(line), f"{path}: pip requirement {line!r} is not pinned with =="


def test_workflow_points_envs_at_this_checkout(workflow_envs: dict, repo_root: Path) -> None:
    root = workflow_envs["SMIL_ROOT"]
    assert root, (
        "the workflow does not set SMIL_ROOT, which envs/*.yaml install from; workflow/rules/common.smk "
        'needs: os.environ["SMIL_ROOT"] = str(Path(workflow.basedir).parent.resolve())'
    )
    assert Path(root).resolve() == repo_root.resolve()


@pytest.mark.slow
def test_smil_imports_in_an_env_built_from_the_pip_section(
    workflow_envs: dict, repo_root: Path, tmp_path: Path
) -> None:
    root = workflow_envs["SMIL_ROOT"]
    if not root:
        pytest.fail("the workflow does not set SMIL_ROOT (see test_workflow_points_envs_at_this_checkout)")
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["SMIL_ROOT"] = root
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for path in _env_files(workflow_envs):
        # Like Snakemake + conda: the env file copied into the conda prefix, the pip section
        # written to a requirements file beside it, and pip run in that folder.
        prefix = tmp_path / "conda-prefix" / path.stem
        prefix.mkdir(parents=True)
        shutil.copy(path, prefix / "0123abcd_.yaml")
        req = prefix / "condaenv.requirements.txt"
        req.write_text("\n".join(_pip_lines(yaml.safe_load(path.read_text()))) + "\n")
        # The dependencies come from the lock on a real build; here only the project itself is
        # installed into the new env (pip of this venv, run for the env's interpreter; the build
        # backend comes from the package index pip is configured with, as in a real build).
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-r", req.name],
            cwd=prefix, env=env, capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, f"{path}: pip failed\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        probe = subprocess.run(
            [str(py), "-c", "import smil; print(smil.__file__)"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert probe.returncode == 0, probe.stderr
        assert Path(probe.stdout.strip()).resolve() == (repo_root / "smil" / "__init__.py").resolve()
        assert (venv / "bin" / "smil").is_file(), f"{path}: no `smil` command in the env"
