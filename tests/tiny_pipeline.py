"""Tiny real datasets made the way the default pipeline makes them: default body model → smil synth →
smil preprocess. Used by training, evaluation and report tests."""

from __future__ import annotations

from pathlib import Path

from smil.body.default_model import build_default_model
from smil.body.io import save_model
from smil.cli import main


def build_tiny_data(root: Path, *, single_samples: int = 30, multi_samples: int = 16, size: int = 64) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    body = root / "default.pkl"
    save_model(body, build_default_model(0))
    out = {"body_model": body}
    for name, samples, views, seed in (("single", single_samples, 1, 1), ("multi", multi_samples, 4, 2)):
        src = root / f"{name}_source"
        assert main(["synth", "--out", str(src), "--body-model", str(body), "--num-samples", str(samples),
                     "--views", str(views), "--image-size", str(size * 2), "--seed", str(seed)]) == 0
        h5 = root / f"{name}.h5"
        assert main(["preprocess", str(src / "manifest.jsonl"), str(h5), "--image-size", str(size),
                     "--split", "0.6,0.2,0.2", "--quiet"]) == 0
        out[name] = h5
    return out
