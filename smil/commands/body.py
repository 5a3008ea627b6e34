"""``smil body``: inspect a body-model file, or build the built-in default model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "body",
        help="inspect a SMIL body-model file or build the default model",
        description="Body-model files (the SMAL/SMPL pickle format). See docs/body-model.md.",
    )
    sub = p.add_subparsers(dest="body_command", metavar="SUBCOMMAND")
    sub.required = True

    info = sub.add_parser(
        "info",
        help="show a model's joints, betas, mesh size, PCA directions, bounding box and SHA-256",
        description="Load MODEL safely and describe it: a table by default, JSON with --json.",
    )
    info.add_argument("model", type=Path, metavar="MODEL.pkl", help="body-model pickle")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--output", type=Path, default=None, metavar="FILE",
                      help="write the JSON to FILE (atomically) instead of printing it")
    info.set_defaults(func=run_info)

    build = sub.add_parser(
        "build-default",
        help="write the built-in default body model",
        description="Build the built-in default SMIL body model and save it as OUT.pkl.",
    )
    build.add_argument("out", type=Path, metavar="OUT.pkl", help="where to write the model")
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    build.set_defaults(func=run_build_default)


def _shape_or_none(value: Any) -> list[int] | None:
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    return [int(s) for s in np.asarray(value).shape]


def describe(path: Path) -> dict:
    """Everything ``smil body info`` reports, as a JSON-ready dict."""
    from smil.body.io import load_model, model_sha256, parents_from_kintree

    data = load_model(path)
    parents = parents_from_kintree(np.asarray(data["kintree_table"]))
    J = len(parents)
    names = data.get("J_names")
    names = [str(n) for n in names] if names is not None and len(names) == J else [
        f"joint_{j:02d}" for j in range(J)]
    template = np.asarray(data["v_template"], dtype=np.float64)
    shapedirs = np.asarray(data["shapedirs"])
    lo, hi = template.min(0), template.max(0)
    static = bool(data.get("static_joint_locs", False))
    return {
        "path": str(path),
        "sha256": model_sha256(path),
        "num_vertices": int(template.shape[0]),
        "num_faces": int(np.asarray(data["f"]).shape[0]),
        "num_joints": J,
        "num_betas": int(shapedirs.shape[-1]),
        "static_joints": static,
        "joint_source": "J (static)" if static else "J_regressor",
        "scaledirs": _shape_or_none(data.get("scaledirs")),
        "transdirs": _shape_or_none(data.get("transdirs")),
        "posedirs": _shape_or_none(data.get("posedirs")),
        "bounding_box": {
            "min": [float(x) for x in lo],
            "max": [float(x) for x in hi],
            "size": [float(x) for x in hi - lo],
        },
        "joints": [
            {"index": j, "name": names[j], "parent": parents[j],
             "parent_name": None if parents[j] < 0 else names[parents[j]]}
            for j in range(J)
        ],
    }


def _table(info: dict) -> str:
    def dims(shape: list[int] | None) -> str:
        return "none" if shape is None else " × ".join(str(s) for s in shape)

    def vec(v: list[float]) -> str:
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

    bb = info["bounding_box"]
    rows = [
        ("model", info["path"]),
        ("sha256", info["sha256"]),
        ("vertices", str(info["num_vertices"])),
        ("faces", str(info["num_faces"])),
        ("joints", f"{info['num_joints']} (positions from {info['joint_source']})"),
        ("betas", str(info["num_betas"])),
        ("scaledirs", dims(info["scaledirs"])),
        ("transdirs", dims(info["transdirs"])),
        ("posedirs", dims(info["posedirs"])),
        ("bbox min", vec(bb["min"])),
        ("bbox max", vec(bb["max"])),
        ("bbox size", vec(bb["size"])),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    name_w = max(len("name"), *(len(j["name"]) for j in info["joints"]))
    lines += ["", f"{'index':>5}  {'name':<{name_w}}  parent"]
    for j in info["joints"]:
        parent = "-" if j["parent"] < 0 else f"{j['parent']} ({j['parent_name']})"
        lines.append(f"{j['index']:>5}  {j['name']:<{name_w}}  {parent}")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    from smil.io_utils import write_json_atomic

    info = describe(args.model)
    if args.output is not None:
        write_json_atomic(args.output, info)
        print(f"smil body info: wrote {args.output}", file=sys.stderr)
    else:
        _emit(json.dumps(info, indent=2) if args.json else _table(info))
    return 0


def _emit(text: str) -> None:
    """Print to stdout; a closed pipe (``smil body info … | head``) is not an error."""
    import os

    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run_build_default(args: argparse.Namespace) -> int:
    from smil.body.default_model import build_default_model
    from smil.body.io import model_sha256, save_model

    data = build_default_model(seed=args.seed)
    save_model(args.out, data)
    print(f"smil body build-default: wrote {args.out} (sha256 {model_sha256(args.out)[:12]}…)",
          file=sys.stderr)
    return 0
