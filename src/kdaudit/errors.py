"""Errors that reach the user as one line on stderr and their exit code (2)."""


class KdauditError(Exception):
    """A problem the user can fix (bad input, bad spec, missing data).

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; no traceback.
    """

    exit_code = 2


class InputError(KdauditError):
    """Malformed input data: logits/labels files, arrays, datasets."""


class SpecError(KdauditError):
    """An invalid spec: unknown key, bad value, unknown registry name."""


class TrainingError(KdauditError):
    """Training could not go on (e.g. a non-finite loss)."""
