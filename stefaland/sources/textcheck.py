"""Every data row has as many fields as its header: the check pandas does not make.

Given ``names``, pandas pads a short row with NaN, so a row cut after its date would be read as a
day of missing values and the rest of the record would become NaN without a word. Counting the fields of
each line is cheap next to parsing them, and the error can name the file and the line.
"""

from __future__ import annotations

from ..errors import StefaLandError


def check_field_counts(lines: list[str], first_line: int, expected: int, url: str, source: str,
                       sep: str | None = None, what: str = "the header") -> None:
    """Refuse the first non-blank line of ``lines`` (file line ``first_line`` onwards) whose field
    count is not ``expected``; ``sep`` None splits on whitespace, as ``sep=r"\\s+"`` does."""
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        count = len(line.split(sep)) if sep is not None else len(line.split())
        if count != expected:
            shown = line.strip()[:60]
            raise StefaLandError(
                f"source {source}: file {url} line {first_line + offset}: {count} fields where {what} has "
                f"{expected} ({shown!r})"
            )
