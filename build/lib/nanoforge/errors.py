"""User-facing errors.

Anything a user can cause (a bad file, a bad spec, a tampered bundle, an unreachable
teacher) raises `NanoforgeError` with a one-line message that names the place. The CLI
prints it and exits with code 2; nothing else turns into a traceback.
"""


class NanoforgeError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class TeacherError(NanoforgeError):
    """The teacher could not be reached or kept failing after retries."""


class BundleError(NanoforgeError):
    """A bundle is missing, tampered with, truncated or of an unsupported format."""
