"""One version source, and job keys that stay put.

The version of pyproject.toml is kdaudit's only one: the package reads it from its installed
metadata, or from the pyproject.toml of the source tree it runs from. The key of a job is the name
of its directory in every store: a key that changes orphans every finished job of every store.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
import torch

import kdaudit
from kdaudit.config.loader import resolve_spec
from kdaudit.plan import build_plan

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_package_version_is_the_one_of_pyproject():
    assert kdaudit.__version__ == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_without_installed_metadata_the_version_comes_from_the_source_tree(monkeypatch):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert kdaudit._version() == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_the_key_of_a_reference_job_never_changes(monkeypatch):
    """The keys of the digits-mlp teacher and of its M0, as computed by kdaudit 0.1.0 with torch
    2.13.0 (the torch version is part of every key; it is set here so that only kdaudit's code
    counts). These keys must not change across refactorings: a changed key invalidates every
    store, whose finished jobs are then trained again. Change them only with a change that is
    meant to change results (and then bump CODE_VERSION in kdaudit.plan.jobs too)."""
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    plan = build_plan(resolve_spec("digits-mlp", ["protocol.seeds=1"]))
    assert plan.teacher.run_id == "teacher"
    assert plan.teacher.key == "92ddb384dcc18fe52bfc"
    assert plan.init.key == "72772f383b9ed3bde7bf"


@pytest.mark.parametrize("overrides", [["protocol.seeds=3"], ["train.threads=1"], ["analysis.level=0.01"]])
def test_what_does_not_determine_the_teacher_leaves_its_key(monkeypatch, overrides):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert build_plan(resolve_spec("digits-mlp", overrides)).teacher.key == "92ddb384dcc18fe52bfc"
