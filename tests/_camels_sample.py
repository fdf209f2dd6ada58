"""The real CAMELS sample of ``shared/data`` in CAMELS' own layout, for tests and benchmarks.

The 19 sample basins (NLDAS forcing, USGS streamflow with ``-999`` gaps) live in one folder and the
671-basin attribute tables in another; ``catalog/camels.yaml`` wants them under one root. Linking
(never copying) them there is the same three lines wherever the real sample is used.
"""

from __future__ import annotations

from pathlib import Path


def link_camels_sample(shared_data: Path, root: Path) -> Path:
    """Make ``root`` a CAMELS root linking to the sample (if not done yet); return it."""
    root.mkdir(parents=True, exist_ok=True)
    links = {
        "basin_mean_forcing": shared_data / "camels_us_sample18" / "basin_mean_forcing",
        "usgs_streamflow": shared_data / "camels_us_sample18" / "usgs_streamflow",
        "camels_attributes_v2.0": shared_data / "camels_us" / "camels_attributes_v2.0",
    }
    for name, target in links.items():
        if not (root / name).exists():
            (root / name).symlink_to(target)
    return root
