"""Training command lines for one process, one node and several nodes (smil.cluster), and the
SLURM profiles they are used with."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from smil.cluster import Geometry, geometry_from_resources, launch_command, launch_prefix, train_command
from smil.errors import ConfigError
from workflow_utils import snakemake

ARGS = ["--config", "config/experiments/my exp.yaml", "--out", "results/experiments/a"]


def _stub_bin(tmp_path: Path) -> Path:
    """Stand-ins for srun, torchrun, squeue and scontrol that record what they were given."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = textwrap.dedent(
        """\
        #!{python}
        import json, os, sys
        print(json.dumps({{"prog": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                          "MASTER_PORT": os.environ.get("MASTER_PORT")}}))
        """
    ).format(python=sys.executable)
    for name in ("srun", "torchrun", "smil"):
        (bindir / name).write_text(record)
    # squeue -h -j JOBID -o %N -> the allocation's node list; scontrol show hostnames LIST -> hosts.
    (bindir / "squeue").write_text("#!/bin/sh\necho 'gpu[07-09]'\n")
    (bindir / "scontrol").write_text(
        '#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu[07-09]" ] && printf "gpu07\\ngpu08\\ngpu09\\n"\n'
    )
    for f in bindir.iterdir():
        f.chmod(0o755)
    return bindir


def _run_in_job_shell(cmd: str, tmp_path: Path, job_id: str = "12345") -> dict:
    """Run ``cmd`` with bash as a SLURM job step would, with the stand-ins first on PATH."""
    env = {
        "PATH": f"{_stub_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": job_id,
    }
    proc = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_one_process_without_or_with_one_gpu() -> None:
    expected = "smil train --config 'config/experiments/my exp.yaml' --out results/experiments/a"
    assert train_command(ARGS, {}) == expected
    assert train_command(ARGS, {"gpu": 1, "cpus_per_gpu": 8}) == expected
    assert train_command(ARGS, {"gres": "gpu:a100:1"}) == expected


def test_launch_prefix_is_empty_for_one_process() -> None:
    assert launch_prefix({}) == ""
    assert launch_prefix({"gpu": 0, "cpus_per_gpu": 8}) == ""
    assert launch_prefix({"gpu": 2}) == "torchrun --standalone --nnodes=1 --nproc-per-node=2 --no-python"


def test_several_gpus_of_one_node_use_torchrun_standalone() -> None:
    cmd = train_command(ARGS, {"gpu": 4, "cpus_per_gpu": 8})
    assert shlex.split(cmd) == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4", "--no-python",
        "smil", "train", *ARGS,
    ]


def test_several_nodes_use_srun_with_explicit_geometry(tmp_path: Path) -> None:
    # The multi-node example of docs/cluster.md.
    resources = {"nodes": 2, "gres": "gpu:a100:4", "gpu": 0, "cpus_per_gpu": 8, "mpi": "srun", "tasks_per_node": 4}
    got = _run_in_job_shell(train_command(ARGS, resources), tmp_path, job_id="12345")
    assert got["prog"] == "srun"
    assert got["argv"] == [
        "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--cpus-per-task=8", "--kill-on-bad-exit=1",
        "smil", "train", *ARGS,
    ]
    # A port of its own per job: 20000 + 12345 mod 10000.
    assert got["MASTER_PORT"] == "22345"


def test_several_nodes_with_torchrun_meet_at_the_first_node(tmp_path: Path) -> None:
    cmd = train_command(ARGS, {"nodes": 3, "gpu": 6, "cpus_per_gpu": 4}, launcher="torchrun")
    got = _run_in_job_shell(cmd, tmp_path, job_id="777")
    assert got["prog"] == "srun"
    assert got["argv"] == [
        "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--cpus-per-task=8", "--kill-on-bad-exit=1",
        "torchrun", "--nnodes=3", "--nproc-per-node=2", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu07:20777", "--rdzv-id=777", "--no-python", "smil", "train", *ARGS,
    ]


def test_explicit_port_and_cpu_only_nodes(tmp_path: Path) -> None:
    cmd = train_command(ARGS, {"nodes": 2, "cpus_per_task": 16}, port=29400)
    got = _run_in_job_shell(cmd, tmp_path)
    assert got["argv"][:4] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16"]
    assert got["MASTER_PORT"] == "29400"


def test_geometry_from_resources() -> None:
    assert geometry_from_resources({}) == Geometry(1, 1, None)
    assert geometry_from_resources({"nodes": 2, "gpu": 8, "cpus_per_gpu": 6}) == Geometry(2, 4, 6)
    assert geometry_from_resources({"nodes": 2, "gres": "gpu:4"}) == Geometry(2, 4, None)
    assert geometry_from_resources({"cpus_per_task": 3}) == Geometry(1, 1, 3)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"nodes": 3, "gpu": 8}, "resources.gpu"),
        ({"gres": "gpu:many"}, "resources.gres"),
        ({"nodes": -1}, "resources.nodes"),
        ({"gpu": "4"}, "resources.gpu"),
    ],
)
def test_bad_resources_name_the_field(resources: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        train_command(ARGS, resources)
    assert field in str(err.value)


def test_bad_launch_arguments() -> None:
    with pytest.raises(ConfigError, match="launcher"):
        launch_command(["smil"], Geometry(), launcher="mpirun")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="port"):
        launch_command(["smil"], Geometry(nodes=2), port=80)
    with pytest.raises(ConfigError, match="procs_per_node"):
        Geometry(procs_per_node=0)


PROBE = """\
import json, os, sys
from smil.train.distributed import detect
info = detect()
out = os.path.join(sys.argv[1], f"rank{info.rank}.json")
with open(out, "w") as f:
    json.dump({"rank": info.rank, "local_rank": info.local_rank, "world_size": info.world_size,
               "launcher": info.launcher, "master_port": info.master_port}, f)
"""


@pytest.mark.slow
def test_torchrun_line_starts_one_process_per_gpu_that_smil_recognises(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    cmd = launch_command([sys.executable, str(probe), str(tmp_path)], Geometry(procs_per_node=2))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["local_rank"], r["world_size"], r["launcher"]) for r in ranks] == [
        (0, 0, 2, "torchrun"),
        (1, 1, 2, "torchrun"),
    ]


@pytest.mark.slow
def test_rule_params_build_the_launcher_from_resources_without_rerun(tmp_path: Path) -> None:
    """The pattern the training rules use: a params function of `resources`. Changing the GPUs
    changes the command line but does not make Snakemake rerun the job."""
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """\
            from smil.cluster import launch_prefix

            rule train:
                output:
                    "cmd.txt",
                resources:
                    gpu=0,
                params:
                    launcher=lambda wildcards, resources: launch_prefix(resources),
                shell:
                    "echo '{params.launcher} smil train --out x' > {output}"
            """
        )
    )
    snakemake(tmp_path, "--cores", "1", "--set-resources", "train:gpu=4")
    assert (tmp_path / "cmd.txt").read_text().split() == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4", "--no-python",
        "smil", "train", "--out", "x",
    ]
    dry = snakemake(tmp_path, "-n", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr


# --- the SLURM profiles -----------------------------------------------------------------------

#: What profiles/slurm-ci may change, and why (see its header comment).
CI_ONLY_KEYS = {
    "slurm-status-command",  # no slurmdbd on the test cluster: squeue, not sacct
    "slurm-init-seconds-before-status-checks",
    "slurm-no-account",
    "slurm-keep-successful-logs",
    "max-threads",  # a 2-CPU test node
}
CI_DROPPED_KEYS = {"software-deployment-method"}  # no conda on CI
GPU_KEYS = {"gpu", "gpus", "gres", "gpu_model", "cpus_per_gpu", "tasks_per_gpu"}


def _profile(repo_root: Path, name: str) -> dict:
    return yaml.safe_load((repo_root / "profiles" / name / "config.yaml").read_text())


def test_slurm_profile_has_the_cluster_settings(repo_root: Path) -> None:
    prof = _profile(repo_root, "slurm")
    assert prof["executor"] == "slurm"
    assert prof["software-deployment-method"] == "conda"
    assert prof["rerun-incomplete"] is True
    assert prof["retries"] >= 1
    assert {"runtime", "mem_mb"} <= set(prof["default-resources"])
    for rule in ("train_singleview", "train_multiview"):
        res = prof["set-resources"][rule]
        assert res["cpus_per_gpu"] >= 1
        # The GPU count comes from each experiment's config, so the profile must not override it.
        assert not {"gpu", "gpus", "gres"} & set(res)
        # Scaled by the attempt, so a retry after a timeout or OOM asks for more.
        assert "attempt" in str(res["runtime"]) and "attempt" in str(res["mem_mb"])
    # profiles/default must not be merged into cluster runs (its `cores` caps job threads).
    text = (repo_root / "profiles/slurm/config.yaml").read_text()
    assert "--workflow-profile profiles/slurm" in text


def test_ci_profile_is_the_slurm_profile_plus_documented_ci_changes(repo_root: Path) -> None:
    prod, ci = _profile(repo_root, "slurm"), _profile(repo_root, "slurm-ci")
    assert set(ci) - set(prod) <= CI_ONLY_KEYS, "undocumented key in profiles/slurm-ci"
    assert set(prod) - set(ci) <= CI_DROPPED_KEYS, "profiles/slurm-ci lacks a key of profiles/slurm"
    for key in set(prod) & set(ci) - {"set-resources"}:
        assert ci[key] == prod[key], f"profiles/slurm-ci changes {key!r}"
    # Same rules sized for the test node: no GPUs there.
    assert set(ci["set-resources"]) == set(prod["set-resources"])
    for rule, res in ci["set-resources"].items():
        assert not set(res) & GPU_KEYS, f"profiles/slurm-ci asks for a GPU for {rule}"
