"""ISMN soil moisture through `catalog/ismn.yaml`: the real ISMN test archives (zipped header+values
and unzipped CEOP-separate), read with the `ismn` package, checked against the station files."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from stefaland.assemble import build_store
from stefaland.catalog import load_catalog
from stefaland.errors import StefaLandError
from stefaland.sources.ismn import IsmnSitesSource, IsmnSoilMoistureSource
from stefaland.store import open_store
from stefaland.units import CANONICAL, UNITS
from stefaland_cli.main import cli

# ismn 1.5.4 calls DataFrame.set_index(inplace=True), which pandas 3 deprecates: not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index"),
              # the small forcing zarr written here keeps its site ids as fixed-width unicode, which zarr 3 flags
              pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification"),
              pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")]

REPO = Path(__file__).resolve().parents[1]
ISMN_CATALOG = REPO / "catalog" / "ismn.yaml"
HEADER_VALUES_ZIP = "ismn_testdata/tests/test_data/zip_archives/multinetwork/header_values/Data_header_values.zip"
CEOP_FOLDER = "ismn_testdata/tests/test_data/Data_seperate_files_20170810_20180809"
# a value per quantity, inside the build's plausible range, for the synthetic station forcing
_TYPICAL = {"temperature": 12.0, "water_flux": 2.0, "energy_flux": 150.0, "pressure": 95000.0,
            "fraction": 0.2, "dimensionless": 1.5, "volumetric_water": 0.25}


@pytest.fixture(scope="module")
def ismn_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One cache for the module: the ismn metadata of each archive is collected once, in tmp."""
    return str(tmp_path_factory.mktemp("ismn-cache"))


@pytest.fixture(autouse=True)
def _cache_in_tmp(ismn_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalog-opened sources use the environment's cache folder: keep it in tmp too."""
    monkeypatch.setenv("STEFALAND_ISMN_CACHE", ismn_cache)


def _catalog(tmp: Path, archive: Path, forcing_root: Path, **defaults: str) -> Path:
    """The repo catalog with its parameter defaults set for one archive (a private copy in tmp)."""
    text = ISMN_CATALOG.read_text()
    text = text.replace('"env(ISMN_ARCHIVE)"', f'"{archive}"').replace('"env(STEFALAND_ISMN_FORCING_ROOT)"', f'"{forcing_root}"')
    for name, value in defaults.items():
        text, count = re.subn(rf"(\n    {name}:\n(?:      .*\n)*?      default: ).*\n", rf"\g<1>{value}\n", text)
        assert count == 1, name
    path = tmp / "ismn.yaml"
    path.write_text(text)
    (tmp / "global.yaml").write_text((REPO / "catalog" / "global.yaml").read_text())  # its include, beside it
    return path


def _station_hourly_from_zip(archive: Path, member_pattern: str) -> pd.DataFrame:
    """Parse one header+values station file ourselves: header line, then date time value flag orig_flag."""
    with zipfile.ZipFile(archive) as zipped:
        name = next(n for n in zipped.namelist() if re.search(member_pattern, n))
        lines = zipped.read(name).decode().splitlines()
    frame = pd.read_csv(io.StringIO("\n".join(lines[1:])), sep=r"\s+", header=None,
                        names=["date", "hour", "value", "flag", "orig_flag"], dtype={"flag": str})
    frame["time"] = pd.to_datetime(frame["date"] + " " + frame["hour"], format="%Y/%m/%d %H:%M")
    return frame


def _station_hourly_ceop(path: Path) -> pd.DataFrame:
    """Parse one CEOP-separate station file: 2 timestamps, 3 ids, lat lon elev, 2 depths, value, flags."""
    frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    frame["time"] = pd.to_datetime(frame[0] + " " + frame[1], format="%Y/%m/%d %H:%M")
    frame["value"] = frame[12].astype(float)
    frame["flag"] = frame[13]
    return frame


def _bounding_box(path: Path) -> dict[str, float]:
    """west/east/south/north of the ISO 19139 ``EX_GeographicBoundingBox`` in ISMN's Metadata.xml."""
    gmd, gco = "{http://www.isotc211.org/2005/gmd}", "{http://www.isotc211.org/2005/gco}"
    box = next(ElementTree.parse(path).getroot().iter(f"{gmd}EX_GeographicBoundingBox"))
    names = {"west": "westBoundLongitude", "east": "eastBoundLongitude",
             "south": "southBoundLatitude", "north": "northBoundLatitude"}
    return {k: float(box.find(f"{gmd}{v}/{gco}Decimal").text) for k, v in names.items()}


def _accepted(flags: pd.Series, good: set[str]) -> pd.Series:
    return flags.str.split(",").apply(lambda parts: all(p in good for p in parts))


def test_zipped_header_values_daily_mean_uses_only_accepted_flags(shared_data: Path, ismn_cache: str) -> None:
    archive = shared_data / HEADER_VALUES_ZIP
    # this archive predates ISMN's "G" flag (its readings are U = unchecked or D0x = dubious)
    source = IsmnSoilMoistureSource(str(archive), good_flags="G,U", cache_dir=ismn_cache)
    assert "SCAN_Abrams" in source.site_ids() and "MAQU_CST-01" in source.site_ids()
    hourly = _station_hourly_from_zip(archive, r"SCAN_Abrams_sm_")
    accepted = hourly[_accepted(hourly["flag"], {"G", "U"})]
    rejected_days = hourly.loc[~_accepted(hourly["flag"], {"G", "U"}), "time"].dt.floor("D")
    day = rejected_days[rejected_days.isin(accepted["time"].dt.floor("D"))].iloc[0]  # a day with both kinds
    expected = accepted.loc[accepted["time"].dt.floor("D") == day, "value"].mean()
    all_readings = hourly.loc[hourly["time"].dt.floor("D") == day, "value"].mean()
    assert expected != pytest.approx(all_readings, abs=1e-9)  # the flag filter changes this day's mean
    got = source.read_sites(["SCAN_Abrams", "NOWHERE_x"], pd.date_range(day, periods=1))
    assert float(got["soil_moisture"].sel(site="SCAN_Abrams").item()) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(float(got["soil_moisture"].sel(site="NOWHERE_x").item()))  # no station: ungauged, not an error
    assert got["soil_moisture"].attrs["units"] == "m3/m3"


def test_zipped_header_values_sites_carry_the_header_coordinates(shared_data: Path, ismn_cache: str) -> None:
    archive = shared_data / HEADER_VALUES_ZIP
    sites = IsmnSitesSource(str(archive), cache_dir=ismn_cache).read().set_index("site")
    with zipfile.ZipFile(archive) as zipped:
        for name in (n for n in zipped.namelist() if n.endswith(".stm")):
            header = zipped.read(name).decode().splitlines()[0].split()  # network network station lat lon elev ...
            network, station = name.split("/")[:2]  # ISMN names stations by folder (CST-01; header: CST_01)
            site = f"{network}_{station}"
            assert sites.loc[site, "network"] == header[0] == network
            assert (sites.loc[site, "lat"], sites.loc[site, "lon"]) == pytest.approx((float(header[3]), float(header[4])))
            assert sites.loc[site, "elevation"] == pytest.approx(float(header[5]))


def test_good_flag_only_leaves_an_unflagged_archive_empty(shared_data: Path, ismn_cache: str) -> None:
    archive = shared_data / HEADER_VALUES_ZIP
    hourly = _station_hourly_from_zip(archive, r"MAQU_CST-01_sm_")
    assert not (hourly["flag"] == "G").any()
    strict = IsmnSoilMoistureSource(str(archive), cache_dir=ismn_cache)
    assert np.isnan(strict.read_sites(["MAQU_CST-01"])["soil_moisture"].values).all()


def test_ceop_folder_daily_mean_and_coordinates_match_the_files(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / CEOP_FOLDER
    station_file = next((folder / "COSMOS" / "ARM-1").glob("*_sm_*.stm"))
    hourly = _station_hourly_ceop(station_file)
    good = hourly[hourly["flag"] == "G"]
    day = good["time"].dt.floor("D").iloc[len(good) // 2]
    expected = good.loc[good["time"].dt.floor("D") == day, "value"].mean()

    catalog = load_catalog(str(_catalog(tmp_path, folder, tmp_path, only_depth_from="true")))
    target = catalog.open("soil_moisture")
    got = target.read_sites(["COSMOS_ARM-1"], pd.date_range(day, periods=1))
    assert float(got["soil_moisture"].item()) == pytest.approx(expected, abs=1e-12)

    sites = catalog.open("sites").read().set_index("site")
    assert sorted(sites.index) == ["COSMOS_ARM-1", "COSMOS_Barrow-ARM"]
    # every CEOP row carries the station's coordinates (columns 8, 9)
    assert sites.loc["COSMOS_ARM-1", "lat"] == pytest.approx(float(hourly[7].iloc[0]))
    assert sites.loc["COSMOS_ARM-1", "lon"] == pytest.approx(float(hourly[8].iloc[0]))
    # Metadata.xml gives the download's bounding box: every station lies inside it
    box = _bounding_box(folder / "Metadata.xml")
    assert sites["lat"].between(box["south"], box["north"]).all()
    assert sites["lon"].between(box["west"], box["east"]).all()
    assert sites["lat"].max() == pytest.approx(box["north"])  # the box is drawn around the stations
    static = pd.read_csv(station_file.parent / "COSMOS_COSMOS_ARM-1_static_variables.csv", sep=";")
    hwsd_sand = static[(static.quantity_name == "sand fraction") & (static["depth_from[m]"] == 0.0)]["value"].iloc[0]
    assert sites.loc["COSMOS_ARM-1", "sand_fraction"] == pytest.approx(float(hwsd_sand))
    climate = static[static.quantity_name == "climate classification"]["value"].iloc[0]
    assert sites.loc["COSMOS_ARM-1", "climate_kg"] == climate


def test_default_surface_layer_excludes_deeper_probes(shared_data: Path, ismn_cache: str) -> None:
    folder = shared_data / CEOP_FOLDER  # cosmic-ray probes: 0-0.19 m and 0-0.21 m
    with pytest.raises(StefaLandError, match=r"no soil_moisture sensor between 0.0 and 0.1 m .*\(its soil_moisture "
                                             r"sensors span 0-0.19 m, 0-0.21 m; set only_depth_from: true "
                                             r"\(ISMN_ONLY_DEPTH_FROM=true for catalog/ismn.yaml\)"):
        IsmnSoilMoistureSource(str(folder), cache_dir=ismn_cache).site_ids()


def test_missing_archive_is_one_line_naming_source_and_file(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, tmp_path / "nowhere.zip", tmp_path)
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(catalog), "--out", str(tmp_path / "s.zarr"),
                                      "--quiet", "--start", "2012-01-01", "--end", "2012-01-31"],
                                env={"STEFALAND_GLOBAL_ROOT": str(tmp_path)})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert re.match(r"error: source sites: ISMN archive not found: .*nowhere\.zip$", lines[0]), lines[0]
    assert not (tmp_path / "s.zarr").exists()


def _write_station_forcing(catalog_path: Path, out: Path, sites: list[str], time: pd.DatetimeIndex) -> None:
    """A small forcing zarr keyed by the ISMN site ids, holding every variable the catalog declares."""
    spec = load_catalog(str(catalog_path)).sources["era5land"]
    rng = np.random.default_rng(0)
    data = {}
    for variable in spec.variables:
        unit = UNITS[variable.units]
        canonical = _TYPICAL[unit.quantity] * (1 + 0.02 * rng.standard_normal((len(sites), len(time))))
        data[variable.source_var] = (("site", "time"), (canonical - unit.offset) / unit.scale)
    xr.Dataset(data, coords={"site": sites, "time": time}).to_zarr(out, mode="w")


def test_build_store_with_ismn_target_and_sites(shared_data: Path, tmp_path: Path, ismn_cache: str) -> None:
    archive = shared_data / HEADER_VALUES_ZIP
    catalog = _catalog(tmp_path, archive, tmp_path, good_flags='"G,U"')
    sites = sorted(load_catalog(str(catalog)).open("sites").read()["site"])
    time = pd.date_range("2012-01-01", "2013-06-30")
    forced = [s for s in sites if not s.startswith("MAQU")]  # MAQU gets no forcing → left out of the store
    _write_station_forcing(catalog, tmp_path / "era5land_daily.zarr", forced, time)

    out = tmp_path / "ismn.zarr"
    summary = build_store(str(catalog), str(out), shard_size=4, sources=["era5land", "ismn_static", "soil_moisture"],
                          start=str(time[0].date()), end=str(time[-1].date()), quiet=True)
    ds = open_store(str(out))
    assert sorted(ds["site"].values.astype(str)) == forced
    assert summary.target == ["soil_moisture"]
    assert str(ds["tvar_units"].sel(tvar="soil_moisture").values) == "m3/m3"
    assert set(ds["region"].values.astype(str)) == {s.split("_")[0] for s in forced}

    reference = IsmnSoilMoistureSource(str(archive), good_flags="G,U", cache_dir=ismn_cache)
    expected = reference.read_sites(["SCAN_Abrams"], time)["soil_moisture"].values[0]
    stored = ds["target"].sel(site="SCAN_Abrams", tvar="soil_moisture").values
    np.testing.assert_allclose(stored, expected.astype(np.float32), equal_nan=True)
    assert np.isfinite(stored).sum() > 100
    forcing = xr.open_zarr(tmp_path / "era5land_daily.zarr")
    kelvin = float(forcing["temperature_2m"].sel(site="SOILSCAPE_node414", time="2012-09-01"))
    stored = float(ds["dynamic"].sel(site="SOILSCAPE_node414", time="2012-09-01", dvar="temperature_2m"))
    assert stored == pytest.approx(kelvin - 273.15, abs=1e-3)
    assert str(ds["dvar_units"].sel(dvar="temperature_2m").values) == CANONICAL["temperature"]


def test_archive_on_object_storage_is_fetched_into_the_cache(shared_data: Path, s3_bucket: str, s3_env,
                                                              tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    archive = shared_data / HEADER_VALUES_ZIP
    fs.put_file(str(archive), f"{s3_bucket.removeprefix('s3://')}/ismn/{archive.name}")
    local = IsmnSoilMoistureSource(str(archive), good_flags="G,U", cache_dir=str(tmp_path / "a"))
    remote = IsmnSoilMoistureSource(f"{s3_bucket}/ismn/{archive.name}", good_flags="G,U", cache_dir=str(tmp_path / "b"))
    assert remote.site_ids() == local.site_ids()
    time = pd.date_range("2012-10-01", "2012-10-31")
    np.testing.assert_array_equal(remote.read_sites(["SOILSCAPE_node414"], time)["soil_moisture"].values,
                                  local.read_sites(["SOILSCAPE_node414"], time)["soil_moisture"].values)
    assert list((tmp_path / "b").rglob(archive.name))  # the fetched copy lives in the cache, not beside the data
