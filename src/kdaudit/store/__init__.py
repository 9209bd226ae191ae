from .jobstore import JobStore  # noqa: F401
