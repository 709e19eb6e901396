"""The podman environment shared by the image and compose tests: the image is built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.image.podman import Unavailable, prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    try:
        return prepare(ROOT, tmp_path_factory.mktemp("podman"))
    except Unavailable as why:
        pytest.skip(f"container image not tested: {why}")
