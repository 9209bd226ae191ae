"""Registries for datasets, models and objectives, and import paths.

A registry maps names to factories. Its built-ins are registered by decorators in the modules
it is given, imported on the first lookup, so no caller has to load anything first. A user's
own model or dataset is named by an import path ``package.module:Name`` instead of a registered
name (:func:`is_import_path`, :func:`import_object`); :meth:`Registry.resolve` accepts both.

>>> MODELS = Registry("model")
>>> @MODELS.register("mlp")
... def build_mlp(**kw): ...
>>> MODELS.get("mlp")  # doctest: +ELLIPSIS
<function build_mlp at ...>
>>> MODELS.resolve("json:dumps", field="model.name")  # doctest: +ELLIPSIS
<function dumps at ...>
"""

from __future__ import annotations

import difflib
import importlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

from .errors import SpecError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named mapping from string keys to factories, filled by decorators.

    ``builtins`` are the modules whose import registers the built-in entries; they are imported
    once, on the first lookup (:meth:`get`, :meth:`resolve`, :meth:`names`, ``in``, iteration).
    """

    def __init__(self, kind: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def load(self) -> None:
        """Import the built-in modules, once. A lookup made by one of them while it is being
        imported sees the entries registered so far; other threads wait for the import."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                for module in self.builtins:
                    importlib.import_module(module)
                self._loaded = True
            finally:
                self._loading = False

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise SpecError(self.unknown_message(name)) from None

    def resolve(self, name: str, *, field: str) -> T:
        """The factory registered as ``name``, or the callable that the import path ``name`` names.

        A name with a colon that is not registered is an import path; ``field`` (e.g.
        ``"model.name"``) starts the one-line :class:`SpecError` of a path that does not import
        or names something that is not callable.
        """
        if name in self or not (isinstance(name, str) and ":" in name):
            return self.get(name)
        obj = import_object(name, field)
        if not callable(obj):
            raise SpecError(f"{field} {name!r}: {name!r} is not callable")
        return cast(T, obj)

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}"

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


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
