"""``smil dataset info DATASET.h5``: what a dataset file holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

from smil.data.store import open_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="inspect HDF5 datasets written by smil preprocess")
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    sub.required = True
    info = sub.add_parser("info", help="schema version, sizes, cameras, splits and attributes of a dataset",
                          description="Print a dataset's schema version, N samples, V views, J joints, "
                                      "camera slots, split sizes and file attributes.")
    info.add_argument("dataset", help="dataset .h5 file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    with open_dataset(args.dataset) as ds:
        data = ds.info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_info(data))
    return 0


def format_info(d: dict[str, Any]) -> str:
    w, h = d["image_size"]
    sizes = d["split_sizes"]
    attrs = d["attrs"]
    lines = [
        f"{d['path']}",
        f"  schema version   {d['schema_version']}",
        f"  samples (N)      {d['num_samples']}",
        f"  views (V)        {d['num_views']}: {', '.join(d['camera_names'])}",
        f"  joints (J)       {d['num_joints']}",
        f"  image size       {w}×{h}",
        f"  valid views      {d['valid_views']} of {d['num_samples'] * d['num_views']}; with mask {d['views_with_mask']}",
        "  splits           " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f" (seed {attrs.get('split_seed')})",
        f"  source           {attrs.get('source_kind')}, world unit {attrs.get('world_unit_m')} m",
        f"  body model       {attrs.get('body_model_sha256') or '(none)'}",
        f"  written by       smil {attrs.get('smil_version')}",
    ]
    if d["params"]:
        lines.append("  body parameters  " + ", ".join(
            f"{n} {tuple(p['shape'])} in {p['present']}" for n, p in d["params"].items()))
    else:
        lines.append("  body parameters  (none)")
    lines.append("  preprocess       " + json.dumps(attrs.get("preprocess_settings"), sort_keys=True))
    lines.append("  joint names      " + ", ".join(attrs.get("joint_names", [])))
    return "\n".join(lines)
