"""Shared pytest fixtures.

Real fixtures are read from ``SMIL_FIXTURES`` (default ``../shared/fixtures`` beside the repository).
When they are missing, tests that need them fail under CI (``CI=true``) or when ``SMIL_FIXTURES`` is
set explicitly, and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _fixtures_path() -> Path:
    env = os.environ.get("SMIL_FIXTURES")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "fixtures")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = _fixtures_path()
    if not path.is_dir():
        msg = f"real fixtures not found at {path} (set SMIL_FIXTURES)"
        if os.environ.get("CI") or os.environ.get("SMIL_FIXTURES"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path.resolve()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Default body model plus tiny single- and multi-view synthetic datasets (built once)."""
    from tiny_pipeline import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("tiny_data"))
