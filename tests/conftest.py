"""Shared fixtures. Real data lives beside the project in ../shared/datasets; tests that need it
skip with a reason where it is absent (a user's fresh clone) and run where it is there (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("CAPTCHA_DATASETS", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dataset(name: str) -> Path:
    """The train folder of a shared data set, or skip the test with the reason."""
    folder = DATASETS / name / "train"
    if not folder.is_dir():
        pytest.skip(f"shared data set {folder} is not here (it sits beside the project in CI)")
    return folder


@pytest.fixture
def captcha_v2() -> Path:
    return dataset("captcha_v2")


@pytest.fixture
def wp_rsc() -> Path:
    return dataset("wp_rsc")
