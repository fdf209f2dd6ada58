"""Holdout split files on the real CAMELS / Caravan / AfSP site tables, via the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.splits import (
    apply_split,
    continent_of,
    holdout,
    load_site_tables,
    make_split,
    read_split,
    write_split,
)
from stefaland_cli.main import cli

MHPI = "mhpi_dplhbv_pub_split/hydroDL-dev/example/dPLHBV/PUBsplitLst.txt"
CARAVAN = "caravan_sample/attributes/*/attributes_other_*.csv"

#: country -> expected holdout continent ("" = none of the three) for every Caravan country.
COUNTRY_CONTINENT = {
    "United States of America": "north_america", "Canada": "north_america",
    "Mexico": "north_america", "Puerto Rico": "north_america", "Jamaica": "north_america",
    "Brazil": "south_america", "Chile": "south_america", "Argentina": "south_america",
    "Australia": "", "New Zealand": "", "South Africa": "", "Namibia": "", "Liberia": "",
    "Israel": "",
}  # every other country in the sample is European (Germany, Norway, Spain, Iceland, "CH", ...)


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["splits", "make", *args])


def camels_attributes(shared_data: Path) -> str:
    return str(shared_data / "camels_us" / "camels_attributes_v2.0")


def test_camels_pur_regions_on_the_531_basins(shared_data, tmp_path):
    out = tmp_path / "pur.csv"
    result = run_cli("--task", "camels", "--scheme", "pur",
                     "--sites", camels_attributes(shared_data), "--out", str(out))
    assert result.exit_code == 0, result.output
    split = read_split(str(out))
    assert len(split.folds) == 531
    assert split.folds.value_counts().sort_index().tolist() == [92, 95, 93, 51, 68, 60, 72]
    assert split.seed is None, "PUR regions do not depend on a seed"
    names = pd.read_csv(shared_data / "camels_us/camels_attributes_v2.0/camels_name.txt",
                        sep=";", dtype=str).set_index("gauge_id")["huc_02"].astype(int)
    regions = [[1, 2], [3, 6], [4, 5, 7], [9, 10], [8, 11, 12, 13], [14, 15, 16, 18], [17]]
    for site, fold in split.folds.items():
        assert names[site] in regions[fold - 1]  # fold ids are 1-based
    assert "01013500" not in split.folds.index, "not in the 531 subset"


def test_camels_pub_is_seeded_balanced_and_order_independent(shared_data, tmp_path):
    args = ["--task", "camels", "--scheme", "pub", "--sites", camels_attributes(shared_data)]
    first, again, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert run_cli(*args, "--out", str(first)).exit_code == 0
    assert run_cli(*args, "--out", str(again)).exit_code == 0
    assert run_cli(*args, "--out", str(other), "--seed", "7").exit_code == 0
    assert first.read_bytes() == again.read_bytes(), "same seed, same file"
    a, c = read_split(str(first)), read_split(str(other))
    assert sorted(a.folds.value_counts().tolist()) == [53] * 9 + [54]
    assert a.seed == 111111 and "not public" in a.note
    assert not a.folds.sort_index().equals(c.folds.sort_index()), "another seed, other groups"
    # the table's row order does not matter: reversed table, same folds
    topo = shared_data / "camels_us/camels_attributes_v2.0/camels_topo.txt"
    name = shared_data / "camels_us/camels_attributes_v2.0/camels_name.txt"
    reversed_topo = tmp_path / "topo_reversed.txt"
    pd.read_csv(topo, sep=";", dtype=str).iloc[::-1].to_csv(reversed_topo, sep=";", index=False)
    b = make_split("camels", "pub", [str(reversed_topo), str(name)],
                   basins=str(shared_data / "camels_us/531_basin_list.txt"))
    assert b.folds.sort_index().equals(a.folds.sort_index())


def test_mhpi_pub_split_is_imported(shared_data, tmp_path):
    out = tmp_path / "mhpi.csv"
    result = run_cli("--task", "camels", "--scheme", "pub", "--sites", camels_attributes(shared_data),
                     "--from-mhpi", str(shared_data / MHPI), "--out", str(out))
    assert result.exit_code == 0, result.output
    split = read_split(str(out))
    # SOURCES.md: restricted to the 531 subset the MHPI fold sizes are these
    assert split.folds.value_counts().sort_index().tolist() == [52, 54, 52, 51, 54, 47, 56, 55, 54, 56]
    groups = json.loads((shared_data / MHPI).read_text())
    assert split.folds["01022500"] == next(i for i, g in enumerate(groups, start=1) if 1022500 in g)


def test_mhpi_pub_fold_table_csv_is_imported(shared_data, tmp_path):
    """The authors' group publishes folds as huc,gage,LAT,LONG,PUB_ID; write the MHPI split in that
    layout from the real tables and check the import gives the same folds as the JSON list."""
    groups = json.loads((shared_data / MHPI).read_text())
    attributes = shared_data / "camels_us" / "camels_attributes_v2.0"
    names = pd.read_csv(attributes / "camels_name.txt", sep=";", dtype=str).set_index("gauge_id")
    topo = pd.read_csv(attributes / "camels_topo.txt", sep=";", dtype=str).set_index("gauge_id")
    rows = [(names.loc[g, "huc_02"], int(g), topo.loc[g, "gauge_lat"], topo.loc[g, "gauge_lon"], fold)
            for fold, group in enumerate(groups, start=1) for g in (f"{gid:08d}" for gid in group)]
    table = tmp_path / "pub_folds.csv"
    pd.DataFrame(rows, columns=["huc", "gage", "LAT", "LONG", "PUB_ID"]).to_csv(table, index=False)
    from_csv, from_json = tmp_path / "a.csv", tmp_path / "b.csv"
    for source, out in ((table, from_csv), (shared_data / MHPI, from_json)):
        result = run_cli("--task", "camels", "--scheme", "pub", "--sites", camels_attributes(shared_data),
                         "--from-mhpi", str(source), "--out", str(out))
        assert result.exit_code == 0, result.output
    pd.testing.assert_series_equal(read_split(str(from_csv)).folds, read_split(str(from_json)).folds)
    broken = tmp_path / "broken.csv"
    broken.write_text("huc,gage,LAT,LONG,PUB_ID\n01,1013500,47.2,-68.5,x\n")
    result = run_cli("--task", "camels", "--scheme", "pub", "--sites", camels_attributes(shared_data),
                     "--from-mhpi", str(broken), "--out", str(tmp_path / "c.csv"))
    assert result.exit_code == 1 and "broken.csv line 2: gage or PUB_ID is not a number" in result.output


def test_continents_from_coordinates_match_every_caravan_country(shared_data):
    frames = [pd.read_csv(f) for f in sorted(shared_data.glob(CARAVAN))]
    gauges = pd.concat(frames, ignore_index=True)
    assert len(gauges) > 14000
    found = continent_of(gauges["gauge_lat"].to_numpy(), gauges["gauge_lon"].to_numpy())
    expected = gauges["country"].map(COUNTRY_CONTINENT).fillna("europe").to_numpy()
    wrong = gauges.loc[found != expected, ["gauge_id", "country", "gauge_lat", "gauge_lon"]]
    assert wrong.empty, wrong.head().to_string()
    assert continent_of(np.array([35.2, 32.7, 28.1]), np.array([33.4, -16.9, -15.4])).tolist() == ["", "", ""]


def test_global_continent_and_random_splits_via_cli(shared_data, tmp_path):
    out = tmp_path / "continents.csv"
    result = run_cli("--task", "global", "--scheme", "continents",
                     "--sites", str(shared_data / CARAVAN), "--out", str(out))
    assert result.exit_code == 0, result.output
    split = read_split(str(out))
    assert split.fold_names == {1: "north_america", 2: "south_america", 3: "europe"}
    assert split.folds["camelsbr_17345000"] == 2 and split.folds["camelsde_110000"] == 3
    assert split.folds[split.folds.index.str.startswith("camelsaus_")].eq(-1).all()
    groups = apply_split(split.folds.index, str(out))
    train, test = holdout(groups, 2)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(split.folds)
    assert set(groups[-1]) <= set(train), "sites on no holdout continent always train"

    random_out = tmp_path / "random.csv"
    assert run_cli("--task", "global", "--scheme", "random", "--sites", str(shared_data / CARAVAN),
                   "--out", str(random_out)).exit_code == 0
    sizes = read_split(str(random_out)).folds.value_counts()
    assert len(sizes) == 3 and sizes.max() - sizes.min() <= 1


def test_ismn_europe_and_wosis_random(shared_data, tmp_path):
    europe = make_split("ismn", "europe", [str(shared_data / CARAVAN)])
    assert set(europe.folds.unique()) == {1, -1}
    assert europe.folds["lamah_105"] == 1 and europe.folds["camels_01022500"] == -1
    wosis = make_split("wosis", "random", [str(shared_data / "isric_afsp_gsif/afsp_texture_derived.csv")])
    assert len(wosis.folds) == 14010, "one row per profile, not per horizon"
    assert sorted(wosis.folds.value_counts().tolist()) == [2802] * 5


def _write_store(url: str, complete: bool = True) -> None:
    sites = np.array(["01022500", "01031500", "02046000", "08023080", "12010000"], dtype=object)
    store = xr.Dataset(
        {"static": (("site", "svar"), np.ones((5, 1), dtype="float32"))},
        coords={"site": sites, "svar": np.array(["area"], dtype=object),
                "lat": ("site", [44.6, 45.5, 36.7, 31.8, 46.4]),
                "lon": ("site", [-67.9, -68.3, -77.9, -94.3, -123.7]),
                "region": ("site", np.array(["01", "01", "02", "12", "17"], dtype=object))},
        attrs={"stefaland_complete": complete},
    )
    store.to_zarr(url, mode="w", consolidated=False,
                  storage_options=fileio.storage_options_for(url) or None)


def test_split_from_a_store_on_s3_written_to_s3(s3_bucket):
    store = f"{s3_bucket}/camels.zarr"
    _write_store(store)
    out = f"{s3_bucket}/splits/pur.csv"
    result = run_cli("--task", "camels", "--scheme", "pur", "--sites", store,
                     "--basins", "all", "--out", out)
    assert result.exit_code == 0, result.output
    groups = apply_split(["01022500", "01031500", "02046000", "08023080", "12010000"], out)
    assert groups == {1: ["01022500", "01031500", "02046000"], 5: ["08023080"], 7: ["12010000"]}


def test_incomplete_store_and_unknown_sites_are_one_line_errors(shared_data, tmp_path):
    store = str(tmp_path / "partial.zarr")
    _write_store(store, complete=False)
    result = run_cli("--task", "wosis", "--scheme", "random", "--sites", store,
                     "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == 1 and "partial.zarr: store is incomplete" in result.output
    assert not (tmp_path / "x.csv").exists()

    basins = tmp_path / "basins.txt"
    basins.write_text("99999998\n99999999\n")  # a list sharing no site (a partial one is intersected)
    result = run_cli("--task", "camels", "--scheme", "pur", "--sites", camels_attributes(shared_data),
                     "--basins", str(basins), "--out", str(tmp_path / "y.csv"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        f"error: none of the 2 sites listed in {basins} is in the site table (first listed: 99999998;")

    no_id = tmp_path / "coords.csv"
    no_id.write_text("latitude,longitude\n1,2\n")
    result = run_cli("--task", "wosis", "--scheme", "random", "--sites", str(no_id), "--out",
                     str(tmp_path / "z.csv"))
    assert result.exit_code == 1 and f"error: {no_id}: no site id column" in result.output


def test_apply_split_checks_coverage(tmp_path):
    table = tmp_path / "sites.csv"
    table.write_text("site,lat,lon\n" + "".join(f"s{i},{i},{i}\n" for i in range(10)))
    split = make_split("wosis", "random", [str(table)], folds=2)
    path = str(tmp_path / "split.csv")
    write_split(split, path)
    sites = [f"s{i}" for i in range(10)]
    groups = apply_split(sites, path)
    assert sorted(groups) == [1, 2] and sorted(groups[1] + groups[2]) == sorted(sites)
    with pytest.raises(StefaLandError, match="site s9 is not among the store's sites"):
        apply_split(sites[:9], path)
    with pytest.raises(StefaLandError, match="site extra has no fold"):
        apply_split(sites + ["extra"], path)
    assert sum(map(len, apply_split(sites + ["extra"], path, subset=True).values())) == 10
    text = Path(path).read_text().splitlines()
    Path(path).write_text("\n".join(text + [text[2]]) + "\n")  # a site twice
    with pytest.raises(StefaLandError, match=f"site {text[2].split(',')[0]} appears more than once"):
        read_split(path)


def test_site_tables_combine_by_id(shared_data):
    table = load_site_tables([camels_attributes(shared_data)])
    assert len(table) == 671 and table.loc["01013500", "huc_02"] == "01"
    assert table.loc["01013500", "lat"] == pytest.approx(47.23739)
