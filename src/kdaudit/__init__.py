"""kdaudit: functional analysis of knowledge distillation.

What did the student really take from the teacher: knowledge, regularisation, or the
teacher's mistakes? The protocol's definitions: docs/protocol.md.
"""

from __future__ import annotations


def _version() -> str:
    """The version of pyproject.toml, its one source: from the installed package's metadata, or,
    when kdaudit runs from a source tree without being installed, from the pyproject.toml of that
    tree. Records and trackers state it, so there is no placeholder: no version, no import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kdaudit")
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"  # src/kdaudit/__init__.py
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ImportError(f"kdaudit is not installed and {pyproject} gives no version: {exc}") from exc
    if project.get("name") != "kdaudit" or not isinstance(project.get("version"), str):
        raise ImportError(f"{pyproject} is not kdaudit's or has no [project] version")
    return project["version"]


__version__ = _version()
