"""User-facing errors.

Every mistake a user can make (a bad file, a wrong flag, a missing model) raises a subclass of
:class:`GagsError` with a one-line message. The CLI prints that line and exits with status 2; it never
shows a traceback for them.
"""


class GagsError(Exception):
    """A problem caused by the user's input, reported as one line."""


class FieldError(GagsError):
    """A language field (tensors or files) is malformed."""


class FormatError(FieldError):
    """A file on disk cannot be read as the format it claims to be."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class RenderError(GagsError):
    """A render was asked for something impossible (no CUDA, bad camera, ...)."""
