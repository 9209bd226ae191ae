from .jobstore import JobStore, sha256_file  # noqa: F401
