"""One exception type for every failure a user can fix.

The CLI prints these as a single ``error: ...`` line, so messages must name the file, source,
site or variable at fault and must not rely on a traceback to be understood.
"""


class StefaLandError(Exception):
    """A problem with the user's input, data or configuration (never a bug in StefaLand)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
