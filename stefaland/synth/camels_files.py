"""Writers of the CAMELS-US text formats, byte-compatible with the files NCAR distributes.

A 4,229-site × 40-year world is ~60 million forcing rows; Python string formatting would take
many minutes, so rows are rendered with numpy: each number becomes a fixed block of byte slots
(digits, sign, point) where unused leading slots hold a NUL sentinel, rows are stacked into one
byte matrix, and the NULs are dropped in one pass. The result is exactly what ``"%.2f"`` (or
``"%8.2f"``) would print for values rounded to two decimals.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

FORCING_HEADER = "Year Mnth Day Hr dayl(s) prcp(mm/day) srad(W/m2) swe(mm) tmax(C) tmin(C) vp(Pa) pet(mm/day)"
FORCING_COLUMNS = ("dayl", "prcp", "srad", "swe", "tmax", "tmin", "vp", "pet")
MISSING = -999.0
TAB, SPACE, NEWLINE, DOT, MINUS, ZERO = 9, 32, 10, 46, 45, 48


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target and rename, so a reader never sees half a file.

    No fsync: thousands of per-site files would spend most of the run waiting on the disk, and a
    crash is handled by the generator's resume (a chunk only counts once all its files exist).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _text_matrix(lines: list[str]) -> np.ndarray:
    """Equal-length ASCII lines → (n, width) uint8."""
    width = len(lines[0])
    return np.frombuffer("".join(lines).encode("ascii"), dtype=np.uint8).reshape(len(lines), width)


def fixed_point(values: np.ndarray, min_width: int = 0) -> np.ndarray:
    """Render ``values`` with 2 decimals as (n, slots) bytes, NUL = nothing.

    The number of integer slots adapts to the largest value; ``min_width`` pads with spaces on the
    left like ``"%{min_width}.2f"``.
    """
    hundredths = np.rint(np.asarray(values, dtype=np.float64) * 100.0)
    largest = float(np.abs(hundredths).max()) if hundredths.size else 0.0
    kind = np.int32 if largest < 2**31 - 1 else np.int64
    hundredths = hundredths.astype(kind)
    negative = hundredths < 0
    integer, fraction = np.divmod(np.abs(hundredths), kind(100))
    int_slots = max(len(str(int(largest // 100))), min_width - 4, 1)
    n_digits = np.ones_like(integer)
    for power in range(1, int_slots):
        n_digits += integer >= 10**power
    slots = int_slots + 1  # one more for the sign
    out = np.zeros((integer.size, slots + 3), dtype=np.uint8)
    remaining = integer
    for column in range(slots - 1, -1, -1):  # units first
        power = slots - 1 - column
        remaining, digit = np.divmod(remaining, kind(10))
        sign = np.where((power == n_digits) & negative, MINUS, 0)
        out[:, column] = np.where(power < n_digits, digit + ZERO, sign)
    out[:, slots] = DOT
    out[:, slots + 1] = fraction // 10 + ZERO
    out[:, slots + 2] = fraction % 10 + ZERO
    if min_width:
        block = out[:, slots + 3 - min_width:]
        block[block == 0] = SPACE
    return out


def _join(blocks: list[np.ndarray]) -> bytes:
    matrix = np.hstack(blocks)
    flat = matrix.ravel()
    return flat[flat != 0].tobytes()


def _column(byte: int, rows: int) -> np.ndarray:
    return np.full((rows, 1), byte, dtype=np.uint8)


class DateBlocks:
    """The per-day row prefixes, rendered once per world and shared by every site's file."""

    def __init__(self, dates: pd.DatetimeIndex) -> None:
        ymd = [f"{d.year:04d} {d.month:02d} {d.day:02d}" for d in dates]
        self.rows = len(dates)
        self.forcing = _text_matrix([f"{s} 12\t" for s in ymd])  # "YYYY MM DD Hr" + tab
        self.streamflow = _text_matrix([f" {s} " for s in ymd])


def forcing_file_bytes(lat: float, elevation: float, area_m2: float, dates: DateBlocks,
                       series: dict[str, np.ndarray]) -> bytes:
    """One ``<site>_lump_<product>_forcing_leap.txt``: 3-line header, column header, daily rows."""
    header = f"{lat:7.2f}\n{elevation:7.2f}\n{int(round(area_m2)):10d}\n{FORCING_HEADER}\n".encode("ascii")
    blocks: list[np.ndarray] = [dates.forcing]
    for i, name in enumerate(FORCING_COLUMNS):
        if i:
            blocks.append(_column(TAB, dates.rows))
        blocks.append(fixed_point(series[name]))
    blocks.append(_column(NEWLINE, dates.rows))
    return header + _join(blocks)


def streamflow_file_bytes(site: str, dates: DateBlocks, discharge_cfs: np.ndarray, flags: np.ndarray) -> bytes:
    """One ``<site>_streamflow_qc.txt``: ``site YYYY MM DD     Q FLAG``; NaN → ``-999.00 M``."""
    missing = np.isnan(discharge_cfs)
    values = np.where(missing, MISSING, discharge_cfs)
    flag_text = np.where(missing, "M", flags).astype("S3")
    flag_bytes = flag_text.view(np.uint8).reshape(dates.rows, 3)
    site_block = np.broadcast_to(np.frombuffer(site.encode("ascii"), dtype=np.uint8), (dates.rows, len(site)))
    blocks = [site_block, dates.streamflow, fixed_point(values, min_width=8),
              _column(SPACE, dates.rows), flag_bytes, _column(NEWLINE, dates.rows)]
    return _join(blocks)


def table_bytes(frame: pd.DataFrame) -> bytes:
    """A ``;``-separated CAMELS attribute table (``NA`` for missing, like the originals)."""
    return frame.to_csv(sep=";", index=False, na_rep="NA", lineterminator="\n").encode("utf-8")
