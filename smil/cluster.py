"""Command lines that start ``smil train`` as one process, on the GPUs of one node, or across nodes.

A training rule builds its launcher from its own resources, so that the same rule runs on a laptop
(``snakemake --cores 2``: one process), on one GPU node and on several nodes under SLURM::

    from smil.cluster import launch_prefix

    rule train_singleview:
        params:
            launcher=lambda wildcards, resources: launch_prefix(resources),
        shell:
            "{params.launcher} smil train --config {input.config} ... > {log} 2>&1"

(:func:`train_command` builds the whole ``smil train`` command line instead.)

A ``params`` function that takes ``resources`` is *derived*: Snakemake leaves it out of the params
rerun trigger, so moving a run from one GPU to four does not retrain anything.

Layouts, chosen from the geometry (``nodes`` × ``procs_per_node``, one process per GPU):

- one process (one node, at most one GPU): ``smil train ARGS``;
- one node, G > 1 GPUs: ``torchrun --standalone --nnodes=1 --nproc-per-node=G --no-python smil
  train ARGS``; torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT``, which :func:`smil.train.distributed.detect` reads;
- N > 1 nodes, launcher ``"srun"`` (the default): ``srun --nodes=N --ntasks=N·G
  --ntasks-per-node=G smil train ARGS``, one task per GPU; every task gets ``SLURM_PROCID``,
  ``SLURM_LOCALID``, ``SLURM_NTASKS`` and ``SLURM_JOB_NODELIST`` from srun, and ``detect()`` makes
  the first host of the node list the master, on port ``MASTER_PORT``;
- N > 1 nodes, launcher ``"torchrun"``: ``srun --nodes=N --ntasks=N --ntasks-per-node=1 torchrun
  --nnodes=N --nproc-per-node=G --rdzv-backend=c10d --rdzv-endpoint=HEAD:PORT ...``, one torchrun
  per node meeting at the first node of the allocation.

srun always gets the geometry spelled out: the SLURM job step of snakemake-executor-plugin-slurm
removes the ``SLURM_*`` task variables (``SLURM_NTASKS``, ``SLURM_NNODES``, ``SLURM_JOB_NODELIST``
...) before it runs a rule's shell command, so a bare ``srun`` would start a single task, and the
first node is looked up from the job id (kept by the job step) with ``squeue`` and ``scontrol``.
Multi-node rules need the ``mpi`` resource so that the job step runs the command itself instead of
wrapping it in a one-node ``srun`` (see docs/cluster.md).

The rendezvous port is ``20000 + SLURM_JOB_ID mod 10000`` unless one is given, so two jobs that
share a node rarely collide (and stay below the Linux ephemeral port range, 32768 and up).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smil.errors import ConfigError

Launcher = Literal["auto", "srun", "torchrun"]

#: Port expression used when no port is given: unique per SLURM job, evaluated by the job's shell.
JOB_PORT = "$((20000 + SLURM_JOB_ID % 10000))"

#: Shell expression for the first host of the running job's allocation. The job step has removed
#: SLURM_JOB_NODELIST, but keeps SLURM_JOB_ID, so the node list comes from squeue.
FIRST_NODE = '$(scontrol show hostnames "$(squeue -h -j "$SLURM_JOB_ID" -o %N)" | head -n 1)'

_GRES_GPU = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?:(\d+)$")


@dataclass(frozen=True)
class Geometry:
    """Where the processes of one training run go.

    ``procs_per_node`` is the number of training processes on each node: one per GPU, or one for a
    CPU-only run. ``cpus_per_proc`` is given to srun as the CPUs of each process (``None``: srun's
    default, one CPU per task).
    """

    nodes: int = 1
    procs_per_node: int = 1
    cpus_per_proc: int | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "procs_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected an integer >= 1, got {value!r}", field=name)
        cpus = self.cpus_per_proc
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
            raise ConfigError(f"expected an integer >= 1 or None, got {cpus!r}", field="cpus_per_proc")

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


def _int_resource(resources: Mapping[str, Any], name: str, default: int) -> int:
    value = resources.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"expected a non-negative integer, got {value!r}", field=f"resources.{name}")
    return value


def gpus_per_node(resources: Mapping[str, Any]) -> int:
    """GPUs on each node of a job, from the resources snakemake-executor-plugin-slurm knows.

    ``gres="gpu:G"`` or ``gres="gpu:MODEL:G"`` is per node (sbatch ``--gres``); ``gpu``/``gpus`` is
    the job's total (sbatch ``--gpus``) and must divide evenly over ``nodes``.
    """
    nodes = max(_int_resource(resources, "nodes", 1), 1)
    gres = resources.get("gres")
    if gres:
        match = _GRES_GPU.match(str(gres))
        if match:
            return int(match.group(1))
        if str(gres).startswith("gpu"):
            raise ConfigError(
                f"expected 'gpu:COUNT' or 'gpu:MODEL:COUNT', got {gres!r}", field="resources.gres"
            )
    total = _int_resource(resources, "gpu", 0) or _int_resource(resources, "gpus", 0)
    if total % nodes:
        raise ConfigError(
            f"{total} GPUs do not divide evenly over {nodes} nodes; request GPUs per node with "
            f"gres='gpu:N' instead",
            field="resources.gpu",
        )
    return total // nodes


def geometry_from_resources(resources: Mapping[str, Any]) -> Geometry:
    """The geometry a job's Snakemake resources ask for: one process per GPU, at least one per node.

    Reads ``nodes``, the GPUs (:func:`gpus_per_node`) and the CPUs of each process from
    ``cpus_per_gpu`` (or ``cpus_per_task`` for a CPU-only job).
    """
    nodes = max(_int_resource(resources, "nodes", 1), 1)
    gpus = gpus_per_node(resources)
    cpus = _int_resource(resources, "cpus_per_gpu", 0) if gpus else 0
    cpus = cpus or _int_resource(resources, "cpus_per_task", 0)
    return Geometry(nodes=nodes, procs_per_node=max(gpus, 1), cpus_per_proc=cpus or None)


def _port_word(port: int | None) -> str:
    if port is None:
        return JOB_PORT
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ConfigError(f"expected a TCP port in 1024..65535, got {port!r}", field="port")
    return str(port)


def _geometry(resources: Mapping[str, Any] | Geometry) -> Geometry:
    return resources if isinstance(resources, Geometry) else geometry_from_resources(resources)


def launch_prefix(
    resources: Mapping[str, Any] | Geometry, *, launcher: Launcher = "auto", port: int | None = None
) -> str:
    """What goes before a command so that it runs once per process of a job's geometry.

    Empty for one process; ``torchrun ... --no-python`` for several GPUs of one node; ``srun ...``
    (launcher ``"srun"``, the default for several nodes) or ``srun ... torchrun ... --no-python``
    (launcher ``"torchrun"``) across nodes. ``"srun"`` and ``"torchrun"`` force those layouts on one
    node too. A shell fragment: the port and first-node lookups are left for the job's shell.
    """
    if launcher not in ("auto", "srun", "torchrun"):
        raise ConfigError(f"expected 'auto', 'srun' or 'torchrun', got {launcher!r}", field="launcher")
    g = _geometry(resources)
    if launcher == "auto":
        if g.nodes == 1:
            if g.procs_per_node == 1:
                return ""
            standalone = ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={g.procs_per_node}"]
            return f"{shlex.join(standalone)} --no-python"
        launcher = "srun"
    cpus = [] if g.cpus_per_proc is None else [g.cpus_per_proc]
    if launcher == "srun":
        srun = ["srun", f"--nodes={g.nodes}", f"--ntasks={g.world_size}", f"--ntasks-per-node={g.procs_per_node}"]
        srun += [f"--cpus-per-task={c}" for c in cpus]
        srun += ["--kill-on-bad-exit=1"]
        return f"MASTER_PORT={_port_word(port)} {shlex.join(srun)}"
    srun = ["srun", f"--nodes={g.nodes}", f"--ntasks={g.nodes}", "--ntasks-per-node=1"]
    srun += [f"--cpus-per-task={c * g.procs_per_node}" for c in cpus]
    srun += ["--kill-on-bad-exit=1"]
    torchrun = [
        "torchrun",
        f"--nnodes={g.nodes}",
        f"--nproc-per-node={g.procs_per_node}",
        "--rdzv-backend=c10d",
    ]
    endpoint = f'--rdzv-endpoint="{FIRST_NODE}:{_port_word(port)}"'
    return f'{shlex.join(srun)} {shlex.join(torchrun)} {endpoint} --rdzv-id="$SLURM_JOB_ID" --no-python'


def launch_command(
    argv: Sequence[str],
    resources: Mapping[str, Any] | Geometry,
    *,
    launcher: Launcher = "auto",
    port: int | None = None,
) -> str:
    """The shell command that runs ``argv`` once per process (see :func:`launch_prefix`)."""
    if not argv:
        raise ConfigError("expected a command to launch, got an empty argument list", field="argv")
    prefix = launch_prefix(resources, launcher=launcher, port=port)
    program = shlex.join(str(a) for a in argv)
    return f"{prefix} {program}" if prefix else program


def train_command(
    train_args: Sequence[str],
    resources: Mapping[str, Any] | Geometry,
    *,
    launcher: Launcher = "auto",
    port: int | None = None,
    executable: str = "smil",
) -> str:
    """``smil train TRAIN_ARGS`` launched for a job's resources (or an explicit :class:`Geometry`)."""
    return launch_command([executable, "train", *train_args], resources, launcher=launcher, port=port)
