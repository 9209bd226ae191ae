from .jobs import Job, Plan, build_plan, content_hash  # noqa: F401
