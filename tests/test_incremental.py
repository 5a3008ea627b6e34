"""Incremental reruns: a complete run has nothing left to do, and a config change schedules only
the jobs that depend on it.

The workflow runs once, in a temporary copy, on the default config shrunk by
:func:`tiny_pipeline_config` (the scheduling, not the data, is under test); each test then edits
the copy's config and asks a dry run what it would do.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workflow_utils import copy_workflow, snakemake

pytestmark = pytest.mark.slow

TINY = {"kind": "synthetic", "body_model": "default", "num_samples": 6, "views": 1, "image_size": 64, "seed": 1}


def tiny_pipeline_config(cfg: dict) -> dict:
    """The default config with every dataset and experiment kept but made tiny: synthetic
    datasets of 6 samples at 64 px, one training epoch. Every rule still runs."""
    cfg = dict(cfg)
    cfg["datasets"] = {
        name: dict(spec, num_samples=6, image_size=64) if spec.get("kind") == "synthetic" else spec
        for name, spec in (cfg.get("datasets") or {}).items()
    }
    cfg["experiments"] = {
        name: dict(spec, set={**(spec.get("set") or {}), "optim.epochs": 1})
        for name, spec in (cfg.get("experiments") or {}).items()
    }
    return cfg


def tiny_copy(repo_root: Path, dest: Path) -> Path:
    """A copy of the workflow whose config is :func:`tiny_pipeline_config` of the default."""
    work = copy_workflow(repo_root, dest)
    _write_config(work, tiny_pipeline_config(_config(work)))
    return work


#: One complete local run per test process, shared with tests/test_slurm.py (which compares the
#: SLURM run's results with it): the pipeline takes minutes even on tiny data.
_TINY_RUNS: dict[Path, Path] = {}


def tiny_local_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow on the tiny default config, run to completion with --cores 2."""
    key = repo_root.resolve()
    if key not in _TINY_RUNS:
        work = tiny_copy(repo_root, tmp_path_factory.mktemp("tiny-local") / "wf")
        snakemake(work, "--cores", "2")
        _TINY_RUNS[key] = work
    return _TINY_RUNS[key]


JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)*)", flags=re.M)


#: Rules upstream of every dataset: no dataset or experiment change may rerun them.
BODY_RULES = {"default_body_model", "default_body_model_summary"}


def _planned(work: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run schedules."""
    proc = snakemake(work, "-n", "--cores", "2")
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return []
    jobs = []
    for rule, body in JOB.findall(out):
        m = re.search(r"^\s+wildcards: (.*)$", body, flags=re.M)
        pairs = [item.split("=", 1) for item in m.group(1).split(", ")] if m else []
        jobs.append((rule, {k.strip(): v.strip() for k, v in pairs}))
    assert jobs, f"a dry run neither planned jobs nor said there is nothing to do:\n{out[-3000:]}"
    return jobs


def _branch(wildcards: dict[str, str], cfg: dict) -> tuple[set[str], set[str]]:
    """The datasets and experiments a job belongs to, from its wildcards; empty for jobs that
    combine everything (figures, the report)."""
    experiments, runs = cfg.get("experiments") or {}, cfg.get("inference") or {}
    datasets, exps = set(), set()
    if "dataset" in wildcards:
        datasets.add(wildcards["dataset"])
    if "exp" in wildcards:
        exps.add(wildcards["exp"])
    if "run" in wildcards:
        run = runs[wildcards["run"]]
        exps.add(run["experiment"])
        if run.get("dataset"):
            datasets.add(run["dataset"])
    datasets |= {experiments[e]["dataset"] for e in exps if e in experiments}
    return datasets, exps


def _check_common(planned: list[tuple[str, dict[str, str]]]) -> None:
    rerun_body = {rule for rule, _ in planned} & BODY_RULES
    assert not rerun_body, f"the body model would be rebuilt: {rerun_body}"


def _jobs_of(planned: list[tuple[str, dict[str, str]]], prefix: str, key: str) -> set[str]:
    return {wc[key] for rule, wc in planned if rule.startswith(prefix) and key in wc}


def _config(work: Path) -> dict:
    return yaml.safe_load((work / "config/config.yaml").read_text())


def _write_config(work: Path, cfg: dict) -> None:
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def complete_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny default pipeline, run to completion."""
    return tiny_local_run(repo_root, tmp_path_factory)


@pytest.fixture()
def work(complete_run: Path):
    """The completed copy; each test's config edit is undone afterwards."""
    original = (complete_run / "config/config.yaml").read_text()
    yield complete_run
    (complete_run / "config/config.yaml").write_text(original)


def test_complete_run_has_nothing_left_to_do(work: Path) -> None:
    assert _planned(work) == []


def test_adding_a_dataset_schedules_only_its_branch(work: Path) -> None:
    cfg = _config(work)
    cfg["datasets"]["tiny_new"] = dict(TINY, seed=3)
    _write_config(work, cfg)
    planned = _planned(work)
    _check_common(planned)
    for rule, wc in planned:
        datasets, exps = _branch(wc, cfg)
        assert datasets <= {"tiny_new"} and not exps, f"{rule} {wc} reruns for a dataset that did not change"
    assert _jobs_of(planned, "synthesize", "dataset") == {"tiny_new"}
    assert _jobs_of(planned, "preprocess", "dataset") == {"tiny_new"}


def test_changing_one_dataset_reruns_its_branch_and_the_experiments_on_it(work: Path) -> None:
    cfg = _config(work)
    name = next(n for n, spec in cfg["datasets"].items() if spec["kind"] == "synthetic")
    cfg["datasets"][name]["num_samples"] += 1
    _write_config(work, cfg)
    planned = _planned(work)
    _check_common(planned)
    for rule, wc in planned:
        datasets, _ = _branch(wc, cfg)
        assert not datasets or datasets == {name}, f"{rule} {wc} reruns although {name} is not its input"
    users = {exp for exp, spec in (cfg.get("experiments") or {}).items() if spec["dataset"] == name}
    assert _jobs_of(planned, "synthesize", "dataset") == {name}
    assert _jobs_of(planned, "preprocess", "dataset") == {name}
    assert _jobs_of(planned, "train_", "exp") == users


def test_changing_preprocessing_reruns_preprocessing_and_what_follows(work: Path) -> None:
    cfg = _config(work)
    cfg.setdefault("preprocess", {})["jpeg_quality"] = 80
    _write_config(work, cfg)
    planned = _planned(work)
    _check_common(planned)
    assert _jobs_of(planned, "synthesize", "dataset") == set()
    assert _jobs_of(planned, "preprocess", "dataset") == set(cfg["datasets"])
    assert _jobs_of(planned, "train_", "exp") == set(cfg.get("experiments") or {})


def test_changing_one_experiment_retrains_only_that_experiment(work: Path) -> None:
    cfg = _config(work)
    experiments = cfg.get("experiments") or {}
    assert experiments, "the default config has no experiment"
    name = sorted(experiments)[0]
    experiments[name]["set"] = {**experiments[name].get("set", {}), "optim.lr": 0.000123}
    _write_config(work, cfg)
    planned = _planned(work)
    _check_common(planned)
    for rule, wc in planned:
        datasets, exps = _branch(wc, cfg)
        assert exps == {name} or not (datasets or exps), f"{rule} {wc} reruns although {name} is not its input"
    assert _jobs_of(planned, "train_", "exp") == {name}


def test_removing_an_experiment_reruns_no_branch(work: Path) -> None:
    cfg = _config(work)
    name = sorted(cfg["experiments"])[0]
    del cfg["experiments"][name]
    runs = cfg.get("inference") or {}
    for run in [r for r, spec in runs.items() if spec.get("experiment") == name]:
        del runs[run]
    _write_config(work, cfg)
    planned = _planned(work)
    _check_common(planned)
    # Only what combines every experiment (figures, the report) may be redone.
    assert [(rule, wc) for rule, wc in planned if any(_branch(wc, cfg))] == []


def test_a_new_smil_version_retrains_every_experiment_and_nothing_upstream(work: Path) -> None:
    """The training rules carry the installed smil version as a parameter: a new release (seen
    here by making the workflow report another version) retrains, while data are not remade."""
    common = work / "workflow/rules/common.smk"
    original = common.read_text()
    assert "return smil.__version__" in original
    common.write_text(original.replace("return smil.__version__", 'return smil.__version__ + ".post1"'))
    try:
        planned = _planned(work)
    finally:
        common.write_text(original)
    _check_common(planned)
    cfg = _config(work)
    assert _jobs_of(planned, "train_", "exp") == set(cfg["experiments"])
    assert _jobs_of(planned, "synthesize", "dataset") == set()
    assert _jobs_of(planned, "preprocess", "dataset") == set()
