"""Imported once by the local executor's fork server (:mod:`kdaudit.execute.pool`): torch,
kdaudit's training code and the optimizers' lazy imports are loaded before any worker forks."""

from .pool import _warm

_warm()
