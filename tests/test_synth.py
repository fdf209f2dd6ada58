"""The virtual-world generator: real files in the real CAMELS formats, with checkable physics."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stefaland.errors import StefaLandError
from stefaland.synth import write_virtual_world
from stefaland.units import UNITS

N_SITES = 24
YEARS = 2
START = 1980  # a leap year: Feb 29 must be in the files
SEED = 3
N_DAYS = 366 + 365
REAL_FORCING_COLUMNS = "Year Mnth Day Hr dayl(s) prcp(mm/day) srad(W/m2) swe(mm) tmax(C) tmin(C) vp(Pa)".split()
USGS_LINE = re.compile(r"^\d{8} \d{4} \d{2} \d{2} +-?\d+\.\d{2} (A|A:e|M)$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = write_virtual_world(tmp_path_factory.mktemp("world") / "vw", N_SITES, YEARS, SEED, START, quiet=True)
    return catalog.parent


def _table(world: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(world / "camels_attributes_v2.0" / f"{name}.txt", sep=";", dtype={"gauge_id": str, "huc_02": str})


def _attributes(world: Path) -> pd.DataFrame:
    tables = [_table(world, f"camels_{t}").set_index("gauge_id") for t in ("topo", "clim", "soil", "geol", "vege", "name")]
    tables.append(_table(world, "synthetic_folds").set_index("gauge_id"))
    return pd.concat(tables, axis=1)


def _forcing_files(world: Path) -> dict[str, Path]:
    files = sorted((world / "basin_mean_forcing" / "synthetic").glob("*/*_lump_synthetic_forcing_leap.txt"))
    return {f.name[:8]: f for f in files}


def _streamflow_files(world: Path) -> dict[str, Path]:
    return {f.name[:8]: f for f in sorted((world / "usgs_streamflow").glob("*/*_streamflow_qc.txt"))}


def _read_forcing(path: Path) -> pd.DataFrame:
    """Read like the CAMELS tooling does: 3 header lines, then a whitespace-separated table."""
    return pd.read_csv(path, sep=r"\s+", skiprows=3)


def _read_streamflow(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep=r"\s+", header=None, names=["gauge", "year", "month", "day", "q", "flag"],
                        dtype={"gauge": str, "flag": str})
    return frame


@pytest.fixture(scope="module")
def forcings(world: Path) -> dict[str, pd.DataFrame]:
    return {site: _read_forcing(path) for site, path in _forcing_files(world).items()}


@pytest.fixture(scope="module")
def attributes(world: Path) -> pd.DataFrame:
    return _attributes(world)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- determinism, layout


def test_same_seed_gives_identical_bytes_and_another_seed_differs(world: Path, tmp_path: Path) -> None:
    again = write_virtual_world(tmp_path / "again", N_SITES, YEARS, SEED, START, quiet=True).parent
    first, second = _all_files(world), _all_files(again)
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first)
    other = write_virtual_world(tmp_path / "other", N_SITES, YEARS, SEED + 1, START, quiet=True).parent
    other_files = _all_files(other)
    for name in ("camels_attributes_v2.0/camels_clim.txt", "camels_attributes_v2.0/camels_topo.txt"):
        assert other_files[name] != first[name]


def test_every_site_has_a_forcing_file_in_its_region_folder(world: Path, attributes: pd.DataFrame) -> None:
    files = _forcing_files(world)
    assert sorted(files) == sorted(attributes.index)
    assert all(re.fullmatch(r"9\d{7}", site) for site in files)
    for site, path in files.items():
        assert path.parent.name == attributes.loc[site, "huc_02"]
    assert attributes["huc_02"].nunique() == min(N_SITES, 18)


def test_forcing_files_follow_the_camels_layout(world: Path, attributes: pd.DataFrame, shared_data: Path,
                                                forcings: dict[str, pd.DataFrame]) -> None:
    real = shared_data / "camels_us/basin_mean_forcing/daymet/01022500_lump_cida_forcing_leap.txt"
    real_header = real.read_text().splitlines()[3].split()
    assert real_header == REAL_FORCING_COLUMNS
    for site, path in _forcing_files(world).items():
        lines = path.read_text().splitlines()
        lat, elevation, area_m2 = float(lines[0]), float(lines[1]), int(lines[2])
        assert lat == pytest.approx(attributes.loc[site, "gauge_lat"], abs=0.006)
        assert elevation == pytest.approx(attributes.loc[site, "elev_mean"], abs=0.006)
        assert area_m2 == pytest.approx(attributes.loc[site, "area_gages2"] * 1e6, abs=1)
        assert lines[3].split()[: len(real_header)] == real_header
        assert lines[3].split()[-1] == "pet(mm/day)"
        assert lines[4].startswith(f"{START} 01 01 12\t") and lines[4].count("\t") == 8
        frame = forcings[site]
        assert list(frame.columns) == REAL_FORCING_COLUMNS + ["pet(mm/day)"]
        dates = pd.to_datetime(frame[["Year", "Mnth", "Day"]].rename(columns={"Mnth": "month", "Year": "year", "Day": "day"}))
        assert dates.tolist() == pd.date_range(f"{START}-01-01", periods=N_DAYS).tolist()
        assert ((frame["Mnth"] == 2) & (frame["Day"] == 29)).sum() == 1
        assert (frame["Hr"] == 12).all()
        assert frame.notna().all().all()


def test_streamflow_files_follow_the_usgs_layout(world: Path, shared_data: Path) -> None:
    real = (shared_data / "camels_us/usgs_streamflow/01022500_streamflow_qc.txt").read_text().splitlines()
    assert all(USGS_LINE.match(line) for line in real[:400])  # the pattern describes the real files
    for site, path in _streamflow_files(world).items():
        lines = path.read_text().splitlines()
        assert len(lines) == N_DAYS
        assert all(USGS_LINE.match(line) for line in lines), path
        assert lines[0].startswith(f"{site} {START} 01 01 ")
        frame = _read_streamflow(path)
        missing = frame["q"] == -999.0
        assert (frame.loc[missing, "flag"] == "M").all()
        assert (frame.loc[~missing, "flag"] != "M").all()
        assert (frame.loc[~missing, "q"] >= 0).all()


def test_some_sites_are_ungauged_and_some_records_have_gaps(world: Path, attributes: pd.DataFrame) -> None:
    gauged = _streamflow_files(world)
    ungauged = set(attributes.index) - set(gauged)
    assert 1 <= len(ungauged) <= 0.15 * N_SITES
    with_gaps = [site for site, path in gauged.items() if (_read_streamflow(path)["q"] == -999.0).any()]
    assert with_gaps, "no gauged site has a missing stretch"
    assert len(with_gaps) < len(gauged)
    for site, path in gauged.items():
        assert path.parent.name == attributes.loc[site, "huc_02"]


def test_numpy_text_renderer_prints_what_printf_prints() -> None:
    from stefaland.synth.camels_files import fixed_point

    rng = np.random.default_rng(0)
    values = np.round(np.concatenate([rng.normal(0, 300, 5000), rng.normal(0, 1, 500),
                                      [0, 0.01, -0.5, -999, 86400, 99999.99, 123456.78]]), 2)
    values[values == 0] = 0.0  # printf writes "-0.00" for negative zero; the files never hold one
    for width in (0, 8):
        rendered = fixed_point(values, min_width=width)
        lines = [bytes(row[row != 0]).decode() for row in rendered]
        assert lines == [f"{v:{width}.2f}" if width else f"{v:.2f}" for v in values]


# --------------------------------------------------------------------------- physics


def test_temperature_range_radiation_humidity_and_day_length(forcings: dict[str, pd.DataFrame],
                                                             attributes: pd.DataFrame) -> None:
    for site, frame in forcings.items():
        assert (frame["tmax(C)"] > frame["tmin(C)"]).all(), site
        saturation = 610.78 * np.exp(17.27 * frame["tmin(C)"] / (frame["tmin(C)"] + 237.3))
        assert (frame["vp(Pa)"] <= saturation + 0.01).all(), site
        assert (frame["srad(W/m2)"] > 0).all() and (frame["pet(mm/day)"] >= 0).all()
        assert frame["dayl(s)"].between(0, 86400).all()
        june, december = frame["dayl(s)"].iloc[171], frame["dayl(s)"].iloc[354]
        north = attributes.loc[site, "gauge_lat"] > 1
        assert (june > december) if north else (june < december + 1e-6 or abs(attributes.loc[site, "gauge_lat"]) < 1)


def test_colder_at_higher_latitude_and_elevation(forcings: dict[str, pd.DataFrame], attributes: pd.DataFrame) -> None:
    sites = sorted(forcings)
    mean_temp = np.array([((forcings[s]["tmax(C)"] + forcings[s]["tmin(C)"]) / 2).mean() for s in sites])
    design = np.column_stack([np.ones(len(sites)), np.abs(attributes.loc[sites, "gauge_lat"]),
                              attributes.loc[sites, "elev_mean"] / 1000.0])
    _, per_degree, per_km = np.linalg.lstsq(design, mean_temp, rcond=None)[0]
    assert per_degree < -0.2
    assert -9.0 < per_km < -4.0  # close to the 6.5 K/km lapse rate


def test_precipitation_occurrence_and_amounts(forcings: dict[str, pd.DataFrame]) -> None:
    wet_fractions = []
    for site, frame in forcings.items():
        prcp = frame["prcp(mm/day)"]
        assert (prcp >= 0).all(), site
        wet = prcp > 0
        wet_fractions.append(wet.mean())
        # Markov persistence: a wet day is more likely after a wet day than after a dry one
        assert wet[1:][wet[:-1].to_numpy()].mean() > wet[1:][~wet[:-1].to_numpy()].mean(), site
    assert 0.05 < min(wet_fractions) and max(wet_fractions) < 0.8
    assert 0.2 < np.mean(wet_fractions) < 0.6


def test_climate_attributes_are_recomputed_from_the_files(forcings: dict[str, pd.DataFrame],
                                                          attributes: pd.DataFrame) -> None:
    for site, frame in forcings.items():
        prcp, pet = frame["prcp(mm/day)"], frame["pet(mm/day)"]
        tmean = (frame["tmax(C)"] + frame["tmin(C)"]) / 2
        row = attributes.loc[site]
        assert row["p_mean"] == pytest.approx(prcp.mean(), rel=1e-9)
        assert row["pet_mean"] == pytest.approx(pet.mean(), rel=1e-9)
        assert row["aridity"] == pytest.approx(pet.mean() / prcp.mean(), rel=1e-9)
        assert row["frac_snow"] == pytest.approx(prcp[tmean < 0].sum() / prcp.sum(), rel=1e-9, abs=1e-12)
        assert row["low_prec_freq"] == pytest.approx((prcp < 1).sum() / (N_DAYS / 365.25), rel=1e-9)
    assert attributes["aridity"].min() < 0.8 and attributes["aridity"].max() > 1.5
    assert attributes["aridity"].between(0.2, 7.0).all()
    assert attributes["p_seasonality"].between(-1.5, 1.5).all()


def test_soil_texture_and_pedotransfer(attributes: pd.DataFrame) -> None:
    texture = attributes[["sand_frac", "silt_frac", "clay_frac"]]
    assert np.allclose(texture.sum(axis=1), 100.0, atol=1e-9)
    assert (texture > 0).all().all()
    # Cosby et al. (1984): sandier soils conduct faster and hold less pore space
    assert np.corrcoef(attributes["sand_frac"], np.log(attributes["soil_conductivity"]))[0, 1] > 0.5
    assert np.corrcoef(attributes["sand_frac"], attributes["soil_porosity"])[0, 1] < -0.5
    assert attributes["geol_permeability"].between(-16.5, -10.9).all()
    assert attributes["frac_forest"].between(0, 1).all()
    assert np.corrcoef(attributes["aridity"], attributes["frac_forest"])[0, 1] < -0.3


def test_water_balance_of_the_streamflow(world: Path, forcings: dict[str, pd.DataFrame],
                                         attributes: pd.DataFrame) -> None:
    ratios, aridity = [], []
    for site, path in _streamflow_files(world).items():
        q = _read_streamflow(path)["q"].replace(-999.0, np.nan)
        depth = q.mean() * 0.3048**3 * 86400 / (attributes.loc[site, "area_gages2"] * 1e6) * 1000  # mm/day
        p_mean = forcings[site]["prcp(mm/day)"].mean()
        assert 0 < depth < p_mean, site
        ratios.append(depth / p_mean)
        aridity.append(attributes.loc[site, "aridity"])
        if attributes.loc[site, "aridity"] < 0.8:
            assert depth / p_mean > 0.2, site
    rank_correlation = pd.Series(ratios).corr(pd.Series(aridity), method="spearman")
    assert rank_correlation < -0.6  # Budyko: drier climates turn less rain into runoff


def test_folds_hold_regions_out_whole(attributes: pd.DataFrame) -> None:
    assert attributes["pub_fold"].between(1, 10).all()  # 1-based, as MHPI's PUB_ID
    assert attributes["pub_fold"].nunique() == 10
    per_region = attributes.groupby("region")["pur_fold"].nunique()
    assert (per_region == 1).all()  # a region is never split across PUR folds
    assert attributes["pur_fold"].between(1, 7).all()  # the 7 CAMELS PUR groups of region codes
    groups = {1: {1, 2}, 2: {3, 6}, 3: {4, 5, 7}, 4: {9, 10}, 5: {8, 11, 12, 13}, 6: {14, 15, 16, 18}, 7: {17}}
    for fold, codes in attributes.groupby("pur_fold")["huc_02"]:
        assert set(codes.astype(int)) <= groups[fold]
    assert attributes.groupby("region")["huc_02"].nunique().max() == 1


# --------------------------------------------------------------------------- catalog


def test_catalog_yaml_has_the_design_metadata(world: Path) -> None:
    catalog = yaml.safe_load((world / "virtual_world.yaml").read_text())
    assert catalog["metadata"] == {"version": 1, "stefaland": {
        "name": "virtual_world", "sites": "sites", "start": f"{START}-01-01", "end": f"{START + YEARS - 1}-12-31"}}
    sources = catalog["sources"]
    assert set(sources) == {"sites", "forcing", "attributes", "streamflow"}
    sites = sources["sites"]
    assert sites["driver"] == "stefaland_camels_attributes"
    assert sites["metadata"] == {"role": "sites", "site_id": "gauge_id", "columns": {
        "lat": "gauge_lat", "lon": "gauge_lon", "region": "region", "fold_pub": "pub_fold", "fold_pur": "pur_fold"}}
    forcing = sources["forcing"]
    assert forcing["driver"] == "stefaland_camels_forcing"
    assert forcing["args"]["urlpath"] == "{{ CATALOG_DIR }}/basin_mean_forcing/synthetic/*/*_forcing_leap.txt"
    assert set(forcing["metadata"]["variables"]) == {"prcp", "tmax", "tmin", "srad", "vp", "pet", "dayl"}
    static = sources["attributes"]["metadata"]["variables"]
    assert sources["attributes"]["metadata"]["role"] == "static"
    assert static["area_gages2"]["never_mask"] is True
    assert {spec["group"] for spec in static.values()} == {"terrain", "climate", "soil", "geology", "vegetation"}
    attribute_columns = set(_attributes(world).columns)
    assert set(static) <= attribute_columns
    target = sources["streamflow"]
    assert target["driver"] == "stefaland_camels_streamflow"
    assert target["metadata"]["variables"]["streamflow"]["from"] == "QObs"
    assert target["metadata"]["variables"]["streamflow"]["per_area"] == "area_gages2"
    every_variable = [*forcing["metadata"]["variables"].values(), *static.values(),
                      *target["metadata"]["variables"].values()]
    assert all(spec["units"] in UNITS and spec["description"] for spec in every_variable)
    for url in sites["args"]["urlpath"] + sources["attributes"]["args"]["urlpath"]:
        assert (world / url.replace("{{ CATALOG_DIR }}/", "")).is_file()


def test_intake_reads_every_source(world: Path, forcings: dict[str, pd.DataFrame]) -> None:
    import intake

    catalog = intake.open_catalog(str(world / "virtual_world.yaml"))
    assert set(catalog) == {"sites", "forcing", "attributes", "streamflow"}
    dynamic = catalog.forcing.read()
    assert dict(dynamic.sizes) == {"site": N_SITES, "time": N_DAYS}
    assert set(dynamic.data_vars) == {"dayl", "prcp", "srad", "swe", "tmax", "tmin", "vp", "pet"}
    assert dynamic["pet"].attrs["units"] == "mm/day"
    first = sorted(forcings)[0]
    assert np.allclose(dynamic["prcp"].sel(site=first).to_numpy(), forcings[first]["prcp(mm/day)"].to_numpy())
    target = catalog.streamflow.read()
    gauged = sorted(_streamflow_files(world))
    assert sorted(map(str, target["site"].to_numpy())) == gauged
    assert target["QObs"].attrs["units"] == "ft3/s"
    assert np.isnan(target["QObs"].to_numpy()).any() and not (target["QObs"].to_numpy() == -999).any()
    sites = catalog.sites.read()
    assert len(sites) == N_SITES and sites["gauge_id"].str.startswith("9").all()
    assert {"gauge_lat", "gauge_lon", "region", "pub_fold", "pur_fold", "huc_02"} <= set(sites.columns)
    assert len(catalog.attributes.read()) == N_SITES


# --------------------------------------------------------------------------- robustness


def test_bad_arguments_and_foreign_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StefaLandError, match="--sites"):
        write_virtual_world(tmp_path / "a", n_sites=0)
    with pytest.raises(StefaLandError, match="--years"):
        write_virtual_world(tmp_path / "a", n_sites=2, years=0)
    foreign = tmp_path / "camels"
    (foreign / "usgs_streamflow").mkdir(parents=True)
    with pytest.raises(StefaLandError, match="usgs_streamflow"):
        write_virtual_world(foreign, n_sites=2, years=1)
    assert not (foreign / "virtual_world.yaml").exists()


def test_other_settings_replace_a_world_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "vw"
    write_virtual_world(out, 10, 1, 0, quiet=True)
    before = _all_files(out)
    assert write_virtual_world(out, 10, 1, 0, quiet=True) == out / "virtual_world.yaml"  # same settings: kept
    assert _all_files(out) == before
    with pytest.raises(StefaLandError, match=r"other settings \(n_sites 10 -> 4\).*--force"):
        write_virtual_world(out, 4, 1, 0, quiet=True)
    assert _all_files(out) == before
    write_virtual_world(out, 4, 1, 0, quiet=True, force=True)
    assert len(_forcing_files(out)) == 4  # and no stale files of the 10-site world
    assert not (out / ".synth_parts").exists()
    (out / "virtual_world.yaml").unlink()  # its own world, same settings, catalog lost: made again, no --force
    assert write_virtual_world(out, 4, 1, 0, quiet=True).exists()


def test_interrupted_run_resumes_to_the_same_world(tmp_path: Path) -> None:
    """Kill a real generator process after its first chunk, re-run it, compare with a clean run."""
    n_sites, years = 256, 1  # two full chunks: the second takes long enough to be interrupted
    out = tmp_path / "interrupted"
    code = ("import sys; from stefaland.synth import write_virtual_world; "
            f"write_virtual_world(sys.argv[1], {n_sites}, {years}, 5, 1990, quiet=True)")
    process = subprocess.Popen([sys.executable, "-c", code, str(out)])
    first_chunk = out / ".synth_parts" / "chunk_00000.parquet"
    deadline = time.monotonic() + 60
    while not first_chunk.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_chunk.exists() and not (out / "virtual_world.yaml").exists()
    for path in _forcing_files(out).values():  # whatever exists is whole
        assert len(path.read_text().splitlines()) == 4 + 365
    write_virtual_world(out, n_sites, years, 5, 1990, quiet=True)
    clean = write_virtual_world(tmp_path / "clean", n_sites, years, 5, 1990, quiet=True).parent
    resumed, expected = _all_files(out), _all_files(clean)
    assert sorted(resumed) == sorted(expected)
    assert all(resumed[name] == expected[name] for name in expected)


def test_cli_writes_a_world(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stefaland_cli.main import cli

    result = CliRunner().invoke(cli, ["data", "synth", str(tmp_path / "cli"), "--sites", "3", "--years", "1",
                                      "--seed", "1", "--start-year", "2001", "--quiet"])
    assert result.exit_code == 0, result.output
    catalog = Path(result.output.strip().splitlines()[-1])
    assert catalog.name == "virtual_world.yaml" and catalog.is_file()
    frame = _read_forcing(next(iter(_forcing_files(catalog.parent).values())))
    assert frame["Year"].iloc[0] == 2001 and len(frame) == 365
    bad = CliRunner().invoke(cli, ["data", "synth", str(tmp_path / "bad"), "--sites", "0"])
    assert bad.exit_code == 1 and "error: --sites must be at least 1" in bad.output


def test_mostly_ungauged_world_keeps_every_site_but_few_streamflow_files(tmp_path: Path) -> None:
    from stefaland.synth.sites import draw_sites

    sites = draw_sites(40, np.random.default_rng(0), ungauged_fraction=0.75)
    assert int(sites["gauged"].sum()) == 10 and len(sites) == 40
    world = write_virtual_world(tmp_path / "sparse", 16, 1, 2, quiet=True, ungauged_fraction=0.75).parent
    assert len(_forcing_files(world)) == 16 and len(_streamflow_files(world)) == 4
    with pytest.raises(StefaLandError, match="ungauged_fraction"):
        write_virtual_world(tmp_path / "none", 4, 1, 2, quiet=True, ungauged_fraction=1.0)
