"""Decorator-based registries for datasets, models and objectives, and import paths.

A user's own model or dataset is named by an import path ``package.module:Name``
(:func:`is_import_path`, :func:`import_object`) instead of a registered name.

>>> MODELS = Registry("model")
>>> @MODELS.register("mlp")
... def build_mlp(**kw): ...
>>> MODELS.get("mlp")  # doctest: +ELLIPSIS
<function build_mlp at ...>
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import SpecError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named mapping from string keys to factories, filled by decorators."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise SpecError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_import_path(name: object) -> bool:
    """Whether ``name`` reads as ``package.module:attr`` (``attr`` may be dotted)."""
    return isinstance(name, str) and _IMPORT_PATH.fullmatch(name) is not None


def import_object(path: str, kind: str) -> object:
    """The object that the import path ``package.module:attr`` names.

    ``kind`` is the spec field the path came from (e.g. ``"model.name"``); every failure is a
    one-line :class:`SpecError` that starts with it.
    """
    where = f"{kind} {path!r}"
    if not is_import_path(path):
        raise SpecError(f"{where}: not an import path of the form package.module:Name")
    module_name, attr = path.split(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SpecError(f"{where}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the module itself fails on import
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SpecError(f"{where}: cannot import module {module_name!r} ({type(exc).__name__}: {first})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
