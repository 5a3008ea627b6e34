"""``smil benchmark``: a JSON and a Markdown table with speed, memory, size and accuracy per batch size."""

from __future__ import annotations

import json

import pytest
import torch

from smil.cli import main
from test_evaluate import trained_model


@pytest.fixture(scope="module")
def single_model(tmp_path_factory, tiny_data):
    return trained_model(tmp_path_factory, tiny_data, "singleview")


def test_benchmark_writes_json_and_markdown(tmp_path, tiny_data, single_model) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["benchmark", str(single_model), str(tiny_data["single"]), "--out", str(out), "--markdown", str(md),
                 "--batch-sizes", "1,3", "--repeats", "2", "--warmup", "0", "--device", "cpu", "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and "RSS" in doc["memory"]["method"]
    assert [r["batch_size"] for r in doc["throughput"]] == [1, 3]
    for row in doc["throughput"]:
        assert row["repeats"] == 2
        assert row["latency_ms"]["median"] > 0 and row["latency_ms"]["min"] <= row["latency_ms"]["max"]
        assert row["samples_per_s"] > 0 and row["images_per_s"] == pytest.approx(row["samples_per_s"])
        assert row["peak_memory_bytes"] > 10 * 2**20  # a process with torch loaded holds far more than 10 MiB
    p = doc["parameters"]
    assert p["total"] == p["backbone"] + p["head"] and p["backbone"] > p["head"] > 0
    acc = doc["accuracy"]
    for name in ("model", "baseline"):
        assert 0 <= acc[name]["pck_bbox_0.1"] <= 1 and acc[name]["mpjpe_mm"] > 0
    text = md.read_text()
    assert "| batch size |" in text and "\n| 1 |" in text and "\n| 3 |" in text
    assert "| mpjpe_mm |" in text and f"{p['total']:,}" in text


def test_benchmark_refuses_bad_options(tmp_path, tiny_data, single_model, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(single_model), str(tiny_data["single"]), "--out", str(tmp_path / "b.json"),
              "--batch-sizes", "0,8"])
    assert exc.value.code == 2 and "batch sizes" in capsys.readouterr().err
    if not torch.cuda.is_available():
        code = main(["benchmark", str(single_model), str(tiny_data["single"]), "--out", str(tmp_path / "b.json"),
                     "--device", "cuda"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "CUDA is not available" in err and "\n" not in err
    assert not (tmp_path / "b.json").exists()
