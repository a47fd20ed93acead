"""Shared fixtures: a throw-away copy of the project's servables and data."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ["tests.s3_fixtures"]  # s3_server, s3_bucket: moto S3 on loopback


@pytest.fixture
def project(tmp_path):
    """A copy of servables/ and data/ that a test may edit; returns its root."""
    root = tmp_path / "project"
    shutil.copytree(os.path.join(PROJECT, "servables"), root / "servables",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(PROJECT, "data"), root / "data")
    return root
