"""Failpoints: named places where a fault-injection run can kill the process.

Set ``KDAUDIT_FAILPOINT=NAME:N`` (or ``NAME:N,OTHER:M``) and the process sends itself SIGKILL
the N-th time it reaches failpoint ``NAME`` (``*`` matches every name, counting all of them).
Unset, a failpoint costs one dictionary lookup. kdaudit's crash-safety tests use this to kill an
audit inside a checkpoint write, between a job's artifacts and its record, or in the middle of
the analysis, and then check that a rerun loses and mixes up nothing.

Names: ``train.epoch`` (after each training epoch), ``checkpoint.write`` (inside a mid-run
checkpoint), ``store.artifacts`` (a job's files written, record not yet), ``store.rename``
(record written, directory not yet renamed), ``analysis.tables`` (between table files),
``report.write`` (before the report).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_plan: dict[str, int] | None = None


def _parse(value: str) -> dict[str, int]:
    plan = {}
    for item in value.split(","):
        if ":" in item:
            name, n = item.rsplit(":", 1)
            plan[name.strip()] = int(n)
    return plan


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if the fault plan says so for this hit of ``name``."""
    global _plan
    value = os.environ.get("KDAUDIT_FAILPOINT")
    if not value:
        return
    if _plan is None:
        _plan = _parse(value)
    for key in (name, "*"):
        if key in _plan:
            _counts[key] = _counts.get(key, 0) + 1
            if _counts[key] == _plan[key]:
                os.kill(os.getpid(), signal.SIGKILL)
