"""The report: a real results tree (tiny models trained, evaluated, benchmarked, inferred through the
`smil` commands), `smil figures`, `smil report`, and the page as a browser shows it.

The browser test needs headless Chromium (Debian package `chromium`): it is required under CI
(`CI=true`) and skipped with the reason elsewhere.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smil.cli import main

TINY_MODEL = {"backbone": "vit_tiny_patch16_224", "head": "mlp", "hidden_dim": 32, "head_depth": 1,
              "num_heads": 2, "dropout": 0.0, "ief_iterations": 1}
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def smil(*args: str | Path) -> None:
    assert main([str(a) for a in args]) == 0, f"smil {' '.join(map(str, args))} failed"


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_data: dict) -> Path:
    """results/ as the workflow lays it out, made by the real commands on the tiny datasets."""
    root = tmp_path_factory.mktemp("report") / "results"
    body = tiny_data["body_model"]
    for name, source in (("single", "single_source"), ("multi", "multi_source")):
        ds = root / "datasets" / name
        smil("preprocess", tiny_data[name].parent / source / "manifest.jsonl", ds / "dataset.h5", "--image-size", 64,
             "--split", "0.6,0.2,0.2", "--summary", ds / "preprocess_summary.json", "--quiet")
        smil("check-gt", ds / "dataset.h5", "--body-model", body, "--out", ds / "check_gt.json")
    for exp, mode, name in (("tiny_single", "singleview", "single"), ("tiny_multi", "multiview", "multi")):
        cfg = {"mode": mode, "seed": 0, "deterministic": True, "body_model": str(body),
               "data": {"dataset": str(root / "datasets" / name / "dataset.h5"), "image_size": 32, "batch_size": 8,
                        "num_workers": 0, "augment": False},
               "model": TINY_MODEL, "optim": {"epochs": 2, "lr": 1e-3}}
        cfg_path = root.parent / f"{exp}.json"
        cfg_path.write_text(json.dumps(cfg))
        out = root / "experiments" / exp
        smil("train", "--config", cfg_path, "--out", out)
        extra = ["--views-ablation", "--overlays", 0] if mode == "multiview" else ["--overlays", 1]
        smil("evaluate", out / "model.pt", root / "datasets" / name / "dataset.h5", "--out", out / "eval",
             "--device", "cpu", "--quiet", *extra)
    exp = root / "experiments" / "tiny_single"
    smil("benchmark", exp / "model.pt", root / "datasets" / "single" / "dataset.h5", "--out", exp / "eval" / "benchmark.json",
         "--batch-sizes", "1,2", "--repeats", 1, "--warmup", 0, "--device", "cpu", "--quiet")
    smil("infer", exp / "model.pt", root / "datasets" / "single" / "dataset.h5", "--split", "test",
         "--out", root / "inference" / "tiny_single_test" / "predictions", "--device", "cpu", "--quiet")
    return root


@pytest.fixture(scope="module")
def report(results: Path) -> Path:
    out = results / "report"
    smil("report", "--results", results, "--out", out)
    return out / "index.html"


def embedded_pngs(html: str) -> list[Image.Image]:
    images = []
    for b64 in DATA_URI.findall(html):
        image = Image.open(io.BytesIO(base64.b64decode(b64)))
        image.load()  # decodes the whole image: a truncated PNG fails here
        images.append(image)
    return images


def test_report_shows_every_experiment_dataset_and_run(report: Path, results: Path) -> None:
    html = report.read_text()
    for anchor in ("experiment-tiny_single", "experiment-tiny_multi", "dataset-single", "dataset-multi", "inference"):
        assert f'id="{anchor}"' in html, anchor
    assert "tiny_single_test" in html
    # The numbers are the evaluation's: the overview shows each model's PA-MPJPE to four digits.
    for exp in ("tiny_single", "tiny_multi"):
        metrics = json.loads((results / "experiments" / exp / "eval" / "metrics.json").read_text())
        assert f"{metrics['model']['headline']['pa_mpjpe_mm']:.4g}" in html
    speed = json.loads((results / "experiments/tiny_single/eval/benchmark.json").read_text())
    assert f"{max(r['samples_per_s'] for r in speed['throughput']):.4g}" in html
    gt = json.loads((results / "datasets/single/check_gt.json").read_text())
    assert f"{gt['keypoints2d']['all']['mean']:.4g}" in html
    # The ground truth of synthetic data is exact: the check shows errors at the float32 floor.
    assert gt["keypoints2d"]["all"]["mean"] < 1e-3


def test_report_is_self_contained_and_every_figure_is_a_valid_png(report: Path) -> None:
    html = report.read_text()
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    assert "<script" not in html and "<link" not in html
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    images = embedded_pngs(html)
    assert len(images) == len(srcs)
    # Three cross-experiment figures, two loss curves, three evaluation figures each, one overlay.
    assert len(images) >= 3 + 2 + 2 * 3 + 1
    assert all(min(im.size) > 100 for im in images)


def test_figures_are_publication_png_and_pdf(report: Path) -> None:
    figures = report.parent / "figures"
    for name in ("pck_curves", "per_joint_errors", "error_vs_views"):
        png = Image.open(figures / f"{name}.png")
        assert png.width >= 3.5 * 300  # at least one column at 300 dpi
        dpi = png.info.get("dpi")
        assert dpi and round(dpi[0]) == 300
        pdf = (figures / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf
        pixels = np.asarray(png.convert("L"), dtype=np.float64)
        assert pixels.std() > 5, f"{name}.png looks blank"


def test_figures_command_writes_named_figure_and_refuses_one_without_data(results: Path, tmp_path: Path,
                                                                           capsys) -> None:
    smil("figures", "--results", results, "--out", tmp_path, "--figures", "pck_curves", "--experiments", "tiny_single")
    assert (tmp_path / "pck_curves.png").is_file() and (tmp_path / "pck_curves.pdf").is_file()
    assert not (tmp_path / "per_joint_errors.png").exists()
    code = main(["figures", "--results", str(results), "--out", str(tmp_path), "--figures", "error_vs_views",
                 "--experiments", "tiny_single"])
    assert code == 2
    assert "views_ablation.json" in capsys.readouterr().err
    assert not (tmp_path / "error_vs_views.png").exists()


def test_report_from_given_figure_files_and_a_subset(results: Path, tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    smil("figures", "--results", results, "--out", figs, "--experiments", "tiny_single")
    out = tmp_path / "rep"
    smil("report", "--results", results, "--out", out, "--experiments", "tiny_single", "--datasets", "single",
         "--inference", "--figure-files", figs / "pck_curves.png", "--title", "Subset")
    html = (out / "index.html").read_text()
    assert "<title>Subset</title>" in html
    assert 'id="experiment-tiny_single"' in html and 'id="experiment-tiny_multi"' not in html
    assert 'id="dataset-multi"' not in html and 'id="inference"' not in html
    assert "3D error against the number of views: not drawn" in html
    assert not (out / "figures").exists()  # the given figures were used, none were made


def test_unreadable_or_missing_results_are_clear_errors(results: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "results"
    shutil.copytree(results / "experiments" / "tiny_single", broken / "experiments" / "tiny_single",
                    ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
    (broken / "experiments/tiny_single/eval/metrics.json").write_text('{"model": ')
    assert main(["report", "--results", str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "not valid JSON" in err
    assert not (tmp_path / "out" / "index.html").exists()
    assert main(["report", "--results", str(broken), "--out", str(tmp_path / "out"), "--experiments", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the page in a browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var m = document.createElement('pre');
  m.id = 'smil-check';
  m.textContent = imgs.length + ' ' + broken.length;
  document.body.appendChild(m);
});
</script>"""


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    reason = "headless Chromium not found (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must install it")
    pytest.skip(reason)


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=180)


def test_report_renders_in_a_browser(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    # The lower half of the first screen holds figures, not just white space.
    assert pixels[1000:].std() > 20
    # Every image has loaded with real pixels (naturalWidth > 0) once the page is loaded.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = run_chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri())
    found = re.search(r'<pre id="smil-check">(\d+) (\d+)</pre>', proc.stdout)
    assert found, proc.stdout[-1000:] + proc.stderr[-2000:]
    images, broken = map(int, found.groups())
    assert images == len(DATA_URI.findall(report.read_text())) and images > 0
    assert broken == 0


# ------------------------------------------------------------------------------------------------
# the workflow's evaluation and report rules


def workflow_copy(repo_root: Path, dest: Path) -> Path:
    from workflow_utils import copy_workflow

    work = copy_workflow(repo_root, dest)
    if not (work / "smil").exists():  # the rules read smil/__init__.py (training reruns on a new version)
        (work / "smil").symlink_to(repo_root / "smil")
    return work


def test_workflow_plans_evaluation_inference_and_report(repo_root: Path, tmp_path: Path) -> None:
    from workflow_utils import snakemake

    work = workflow_copy(repo_root, tmp_path / "wf")
    out = snakemake(work, "-n", "--quiet", "rules").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # Two experiments (one multi-view with the views ablation), two datasets, one inference run,
    # three cross-experiment figures and one page.
    assert counts["evaluate"] == "1" and counts["evaluate_views"] == "1"
    assert counts["benchmark_model"] == "2" and counts["check_gt"] == "2"
    assert counts["infer"] == "1" and counts["figures"] == "3" and counts["report"] == "1"
    shell = snakemake(work, "-n", "-p", "results/report/index.html").stdout
    assert "smil benchmark" in shell and "--batch-sizes 1,8" in shell
    assert "smil evaluate" in shell and "--views-ablation" in shell
    assert "--figure-files results/report/figures/pck_curves.png" in shell


@pytest.mark.parametrize("entry, message", [
    ("{experiment: tiny_single, dataset: synth_single, input: x.mp4}", "oneOf"),
    ("{experiment: nope, dataset: synth_single}", "experiment 'nope'"),
    ("{experiment: tiny_single, dataset: nope}", "dataset 'nope'"),
])
def test_workflow_refuses_a_bad_inference_entry(repo_root: Path, tmp_path: Path, entry: str, message: str) -> None:
    from workflow_utils import snakemake

    work = workflow_copy(repo_root, tmp_path / "wf")
    cfg = work / "config" / "config.yaml"
    cfg.write_text(cfg.read_text().replace(
        "  tiny_single_test:\n    experiment: tiny_single\n    dataset: synth_single\n    split: test\n",
        f"  bad_run: {entry}\n"))
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
