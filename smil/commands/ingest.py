"""``smil ingest``: read a source's annotations into a sample manifest (``manifest.jsonl``).

Each source lives in its own module exposing ``add_cli(subparsers)``, which adds its sub-command
under ``smil ingest`` and sets ``func``. This module only owns the ``ingest`` parser.
"""

from __future__ import annotations

import argparse
import importlib

#: ``smil ingest NAME`` → the module that implements it.
SOURCES: tuple[tuple[str, str], ...] = (
    ("replicant", "smil.data.replicant"),
    ("sleap", "smil.data.sleap_ingest"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="convert a source's annotations (replicAnt, SLEAP) into a sample manifest",
        description="Convert a source's annotations into a sample manifest (manifest.jsonl) for smil preprocess.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True
    for _name, module_path in SOURCES:
        importlib.import_module(module_path).add_cli(sources)
