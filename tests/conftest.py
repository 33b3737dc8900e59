"""Shared test fixtures: locations of ../shared data, skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "fixtures" / "reference"
REALDATA = SHARED / "realdata"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared folder beside the repository is not here)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The official-code reference fixtures (../shared/fixtures/reference)."""
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """Real photos, annotations and videos (../shared/realdata)."""
    return _require(REALDATA)


@pytest.fixture(scope="session")
def weights_src() -> Path:
    """The published original network files (../shared/weights-src)."""
    return _require(SHARED / "weights-src")
