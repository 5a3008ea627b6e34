"""The default pipeline run through a real SLURM cluster with snakemake-executor-plugin-slurm.

Needs a running cluster (`.ci/slurm/start.sh` starts a one-node one; `make test-slurm` starts it,
runs these tests and stops it). With SMIL_SLURM_REQUIRED=1 (set by .ci/run after starting the
cluster) a missing cluster is a failure; elsewhere these tests skip and say why.

The run uses profiles/slurm-ci (profiles/slurm without conda and with squeue for job status; see
its header) on the default config made tiny (every dataset and experiment, fewer samples and one
epoch: the execution, not the data, is under test). Every job of the run must have been a SLURM job
that completed in the copy's folder, and the results must be those of a local `snakemake --cores 2`
run of the same config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_incremental import tiny_copy, tiny_local_run
from workflow_utils import snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REQUIRED = os.environ.get("SMIL_SLURM_REQUIRED") == "1"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
#: Rules that run on the submitting node, never as SLURM jobs.
LOCAL_RULES = {"all"}


def _cluster_problem() -> str | None:
    """Why the tests cannot use a SLURM cluster here, or None when they can."""
    for tool in ("sbatch", "squeue", "sinfo", "scontrol"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`sinfo` did not answer within 30 s (is slurmctld running?)"
    if proc.returncode != 0:
        return f"`sinfo` failed: {proc.stderr.strip()[:300]}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#").startswith(("idle", "mixed", "allocated", "completing")) for s in states):
        return f"no SLURM node is up (sinfo states: {states or 'none'})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        if REQUIRED:
            pytest.fail(f"SMIL_SLURM_REQUIRED=1 but no usable SLURM cluster: {problem}")
        pytest.skip(f"no SLURM cluster: {problem} (`make test-slurm` starts one with .ci/slurm/start.sh)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("a SLURM cluster is up but snakemake-executor-plugin-slurm is not installed in this venv")


def _cancel_jobs_under(folder: Path) -> None:
    """Cancel SLURM jobs still queued or running in ``folder`` (a run that failed or timed out)."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30)
    ids = [line.split()[0] for line in proc.stdout.splitlines() if len(line.split()) == 2
           and Path(line.split()[1]).resolve().is_relative_to(folder.resolve())]
    if ids:
        subprocess.run(["scancel", *ids], timeout=30)


def _scontrol_job(job_id: str) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"scontrol does not know job {job_id}: {proc.stderr}"
    fields: dict[str, str] = {}
    for token in proc.stdout.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def _job_counts(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table of a dry run."""
    table = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def slurm_run(cluster: None, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tiny_copy(repo_root, tmp_path_factory.mktemp("slurm") / "wf")
    dry = snakemake(work, "--workflow-profile", "profiles/slurm-ci", "-n")
    planned = _job_counts(dry.stdout + dry.stderr)
    start = time.monotonic()
    try:
        proc = snakemake(work, "--workflow-profile", "profiles/slurm-ci", timeout=1800)
    finally:
        _cancel_jobs_under(work)
    elapsed = time.monotonic() - start
    print(f"\nSLURM run of the default pipeline: {elapsed:.0f} s")
    return {"work": work, "log": proc.stdout + proc.stderr, "elapsed": elapsed, "planned": planned}


@pytest.fixture(scope="module")
def local_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same config run locally (shared with tests/test_incremental.py)."""
    return tiny_local_run(repo_root, tmp_path_factory)


def test_every_job_ran_as_a_completed_slurm_job(slurm_run: dict) -> None:
    work, log = slurm_run["work"], slurm_run["log"]
    planned = {rule: n for rule, n in slurm_run["planned"].items() if rule not in LOCAL_RULES}
    assert planned, "the dry run planned no job"
    submitted = SUBMITTED.findall(log)
    assert submitted, f"no job was submitted to SLURM:\n{log[-4000:]}"
    completed: dict[str, int] = {}
    for _, slurm_id, logfile in submitted:
        info = _scontrol_job(slurm_id)
        assert Path(info["WorkDir"]).resolve() == work.resolve(), info
        assert Path(logfile).resolve().is_relative_to(work / ".snakemake" / "slurm_logs")
        if info["JobState"] == "COMPLETED":
            assert Path(logfile).is_file(), f"no SLURM log {logfile}"
            rule = info["Comment"].removeprefix("rule_").split("_wildcards_")[0]
            completed[rule] = completed.get(rule, 0) + 1
    # Each planned job finished as a SLURM job of its own, none ran on the submitting node.
    assert completed == planned
    assert len(submitted) == sum(planned.values()), "some jobs failed and were retried"


def test_slurm_results_equal_a_local_run(slurm_run: dict, local_run: Path) -> None:
    work = slurm_run["work"]
    model = Path("results/models/default.pkl")
    assert _sha256(work / model) == _sha256(local_run / model)
    summary = Path("results/models/default.summary.json")
    assert json.loads((work / summary).read_text()) == json.loads((local_run / summary).read_text())
    datasets = sorted(p.relative_to(local_run) for p in (local_run / "results/datasets").glob("*/dataset.h5"))
    assert datasets, "the local run built no dataset"
    for ds in datasets:
        assert (work / ds).is_file(), f"the SLURM run did not build {ds}"
        assert _sha256(work / ds) == _sha256(local_run / ds), f"{ds} differs between SLURM and local runs"


def test_a_complete_slurm_run_has_nothing_left_to_do(slurm_run: dict) -> None:
    dry = snakemake(slurm_run["work"], "--workflow-profile", "profiles/slurm-ci", "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


PROBE = """\
import json, os, sys
from smil.train.distributed import detect
info = detect()
with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
    json.dump({"rank": info.rank, "world_size": info.world_size, "launcher": info.launcher,
               "master_addr": info.master_addr, "master_port": info.master_port,
               "job": os.environ.get("SLURM_JOB_ID")}, f)
"""


@pytest.mark.parametrize(("launcher", "seen_as"), [("srun", "slurm"), ("torchrun", "torchrun")])
def test_multi_process_launch_inside_a_snakemake_slurm_job(
    cluster: None, tmp_path: Path, launcher: str, seen_as: str
) -> None:
    """The multi-node layouts, on the one test node: a rule with the `mpi` resource (so the job
    step runs the command itself, with the allocation's SLURM_* variables removed) starts two
    processes that smil's distributed set-up recognises as ranks 0 and 1 of one job."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""\
            from smil.cluster import Geometry, launch_prefix

            rule probe:
                output:
                    directory("ranks"),
                resources:
                    mpi="srun",
                    tasks=2,
                    mem_mb=2000,
                    runtime=10,
                params:
                    launcher=lambda wildcards, resources: launch_prefix(
                        Geometry(nodes=1, procs_per_node=2), launcher="{launcher}"
                    ),
                shell:
                    "mkdir -p {{output}} && {{params.launcher}} {sys.executable} probe.py {{output}}"
            """
        )
    )
    (tmp_path / "profile").mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "profiles/slurm-ci/config.yaml", tmp_path / "profile")
    try:
        proc = snakemake(tmp_path, "--workflow-profile", "profile", "--retries", "0", timeout=900)
    finally:
        _cancel_jobs_under(tmp_path)
    (slurm_id,) = [job for _, job, _ in SUBMITTED.findall(proc.stdout + proc.stderr)]
    ranks = sorted(
        (json.loads(p.read_text()) for p in (tmp_path / "ranks").glob("rank*.json")), key=lambda r: r["rank"]
    )
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert [(r["rank"], r["world_size"], r["launcher"], r["job"]) for r in ranks] == [
        (0, 2, seen_as, slurm_id),
        (1, 2, seen_as, slurm_id),
    ]
    if seen_as == "slurm":
        # The master is the first host of the job's node list, on the job's own port.
        assert {(r["master_addr"], r["master_port"]) for r in ranks} == {(host, 20000 + int(slurm_id) % 10000)}
