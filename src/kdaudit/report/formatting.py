"""How the reports write numbers and values: p-values, mean ± SEM, α, durations, the spec.

Every formatter takes anything (a float, a numpy scalar, a string, None) and writes a missing
or non-finite value as ``—`` (:data:`DASH`).

>>> fmt_num(0.91234), fmt_num(0.00036), fmt_p(2.1e-05), fmt_mean_sem(0.5, float("nan"))
('0.9123', '0.00036', '2.1e-05', '0.5000')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DASH",
    "number",
    "missing",
    "truthy",
    "fmt_num",
    "fmt_signed",
    "fmt_effect",
    "fmt_p",
    "fmt_int",
    "fmt_stat",
    "fmt_alpha",
    "fmt_mean_sem",
    "fmt_pct",
    "fmt_pct_sem",
    "fmt_points",
    "fmt_duration",
    "spec_text",
]

DASH = "—"


def number(x: Any) -> float | None:
    """A finite float, or None (None, NaN, ±inf, non-numeric)."""
    if x is None or isinstance(x, str | bytes):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _decimals(a: float, digits: int) -> int:
    """``digits`` decimals, more for small magnitudes so that two significant digits show."""
    return max(digits, min(6, 1 - math.floor(math.log10(a))))


def fmt_num(x: Any, digits: int = 4, *, sign: bool = False) -> str:
    """``0.9123``; small values with two significant digits (``0.00036``), tiny or huge ones in
    scientific notation (``3.2e-07``); NaN → ``—``; ``sign``: an explicit sign (``+0.0123``)."""
    v = number(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    a = abs(v)
    plus = "+" if sign else ""
    if a < 1e-5 or a >= 1e6:
        return f"{v:{plus}.1e}"
    return f"{v:{plus}.{_decimals(a, digits)}f}"


def fmt_signed(x: Any, digits: int = 4) -> str:
    """Like :func:`fmt_num` with an explicit sign (``+0.0123``)."""
    return fmt_num(x, digits, sign=True)


def fmt_effect(x: Any) -> str:
    """An effect size with a sign and two decimals."""
    v = number(x)
    return DASH if v is None else f"{v:+.2f}"


def fmt_p(x: Any) -> str:
    """p-values: ``0.042``, ``0.0003``, ``2.1e-05``; NaN → ``—``."""
    v = number(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    if v < 1e-4:
        return f"{v:.1e}"
    if v < 0.01:
        return f"{v:.4f}"
    return f"{v:.3f}"


def fmt_int(x: Any) -> str:
    """A count with thousands separators (``1,258``)."""
    v = number(x)
    if v is None:
        return DASH
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:g}"


def fmt_stat(x: Any) -> str:
    """A test statistic: an integer as such, otherwise one decimal."""
    v = number(x)
    if v is None:
        return DASH
    return f"{int(v)}" if v == int(v) else f"{v:.1f}"


def fmt_alpha(x: Any) -> str:
    """α as ``0.9``; a non-numeric value as written."""
    v = number(x)
    if v is None:
        return DASH if x is None or _isnan(x) else str(x)
    return f"{v:g}"


def fmt_mean_sem(mean: Any, sem: Any) -> str:
    """``mean ± SEM``; the mean alone where the SEM is missing."""
    m = fmt_num(mean)
    if m == DASH:
        return DASH
    s = fmt_num(sem)
    return m if s == DASH else f"{m} ± {s}"


def fmt_pct(x: Any, digits: int = 2) -> str:
    """A share in percent, without the sign: ``0.9691`` → ``96.91``."""
    v = number(x)
    return DASH if v is None else f"{100 * v:.{digits}f}"


def fmt_pct_sem(mean: Any, sem: Any, digits: int = 2) -> str:
    """A share's ``mean ± SEM`` in percent (``96.91 ± 0.28``); the mean alone without a SEM."""
    m = fmt_pct(mean, digits)
    if m == DASH:
        return DASH
    s = fmt_pct(sem, digits)
    return m if s == DASH else f"{m} ± {s}"


def fmt_points(x: Any, digits: int = 2) -> str:
    """A difference of shares in percentage points, signed: ``0.016`` → ``+1.60``."""
    v = number(x)
    if v is None:
        return DASH
    return "0" if v == 0 else f"{100 * v:+.{digits}f}"


def fmt_duration(seconds: Any) -> str:
    """``12.3 s``, ``5 min 12 s`` or ``2 h 01 min``."""
    v = number(seconds)
    if v is None:
        return str(seconds)
    if v < 60:
        return f"{v:.1f} s"
    minutes, sec = divmod(int(round(v)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _isnan(x: Any) -> bool:
    try:
        return isinstance(x, float | np.floating) and math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def missing(x: Any) -> bool:
    """True for None, NaN and blank strings."""
    if x is None:
        return True
    if isinstance(x, str):
        return x.strip() == ""
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def truthy(x: Any) -> bool:
    """A flag read from a table cell: ``True``, ``"yes"``, ``"1"``; missing values are false."""
    if isinstance(x, str):
        return x.strip().lower() in {"true", "yes", "1"}
    if missing(x):
        return False
    try:
        return bool(x)
    except (TypeError, ValueError):
        return False


def spec_text(spec: Mapping[str, Any] | None) -> str:
    """The resolved spec as YAML (JSON where YAML cannot write it); empty without a spec."""
    if not spec:
        return ""
    try:
        import yaml

        return yaml.safe_dump(_plain(spec), sort_keys=False, allow_unicode=True).rstrip()
    except Exception:  # noqa: BLE001 - fall back to JSON for odd values
        return json.dumps(spec, indent=2, default=str, ensure_ascii=False)


def _plain(obj: Any) -> Any:
    """Spec values as YAML-safe plain types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)
