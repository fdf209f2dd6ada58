"""The intake catalog of a virtual world, following docs/DESIGN.md §1.

Every variable carries a unit from ``stefaland/units.py`` and a masking group, so ``data build``
can convert and mask it without any knowledge of the generator.
"""

from __future__ import annotations

import yaml

ATTRIBUTES_DIR = "{{ CATALOG_DIR }}/camels_attributes_v2.0"

FORCING_VARIABLES: dict[str, tuple[str, str]] = {
    "prcp": ("mm/day", "daily precipitation (basin mean)"),
    "tmax": ("degC", "daily maximum air temperature"),
    "tmin": ("degC", "daily minimum air temperature"),
    "srad": ("W/m2", "incident shortwave radiation, mean over the daylight period"),
    "vp": ("Pa", "water vapour pressure"),
    "pet": ("mm/day", "potential evapotranspiration (Hargreaves)"),
    "dayl": ("s", "day length"),
}

# name -> (units, group, description)
STATIC_VARIABLES: dict[str, tuple[str, str, str]] = {
    "elev_mean": ("m", "terrain", "mean catchment elevation"),
    "slope_mean": ("m/km", "terrain", "mean catchment slope"),
    "area_gages2": ("km2", "terrain", "catchment area"),
    "p_mean": ("mm/day", "climate", "mean daily precipitation"),
    "pet_mean": ("mm/day", "climate", "mean daily potential evapotranspiration"),
    "aridity": ("1", "climate", "aridity index, pet_mean / p_mean"),
    "frac_snow": ("fraction", "climate", "fraction of precipitation falling on days below 0 degC"),
    "p_seasonality": ("1", "climate", "precipitation seasonality (>0: warm-season peak, <0: cold-season peak)"),
    "high_prec_freq": ("days", "climate", "days per year with precipitation >= 5 x mean daily precipitation"),
    "high_prec_dur": ("days", "climate", "mean duration of high-precipitation events"),
    "low_prec_freq": ("days", "climate", "days per year with precipitation < 1 mm/day"),
    "low_prec_dur": ("days", "climate", "mean duration of dry periods (< 1 mm/day)"),
    "soil_depth_pelletier": ("m", "soil", "depth to bedrock"),
    "soil_depth_statsgo": ("m", "soil", "soil depth (maximum 1.5 m)"),
    "soil_porosity": ("fraction", "soil", "volumetric soil porosity"),
    "soil_conductivity": ("cm/h", "soil", "saturated hydraulic conductivity"),
    "max_water_content": ("m", "soil", "maximum water content of the soil column"),
    "sand_frac": ("%", "soil", "sand fraction of the soil"),
    "silt_frac": ("%", "soil", "silt fraction of the soil"),
    "clay_frac": ("%", "soil", "clay fraction of the soil"),
    "carbonate_rocks_frac": ("fraction", "geology", "fraction of carbonate sedimentary rocks"),
    "geol_porostiy": ("fraction", "geology", "subsurface porosity"),
    "geol_permeability": ("log10(m2)", "geology", "subsurface permeability"),
    "frac_forest": ("fraction", "vegetation", "forest fraction"),
    "lai_max": ("1", "vegetation", "maximum monthly mean leaf area index"),
    "lai_diff": ("1", "vegetation", "difference between maximum and minimum monthly mean LAI"),
    "gvf_max": ("fraction", "vegetation", "maximum monthly mean green vegetation fraction"),
    "gvf_diff": ("fraction", "vegetation", "difference between maximum and minimum monthly mean GVF"),
}

NEVER_MASK = {"area_gages2"}


def catalog_dict(start_year: int, years: int) -> dict:
    """The catalog as plain data (what ``yaml.safe_load`` of the written file returns)."""
    static = {}
    for name, (units, group, description) in STATIC_VARIABLES.items():
        spec: dict[str, str | bool] = {"units": units, "group": group, "description": description}
        if name in NEVER_MASK:
            spec["never_mask"] = True
        static[name] = spec
    return {
        "metadata": {
            "version": 1,
            "stefaland": {
                "name": "virtual_world",
                "sites": "sites",
                "start": f"{start_year:04d}-01-01",
                "end": f"{start_year + years - 1:04d}-12-31",
            },
        },
        "sources": {
            "sites": {
                "description": "virtual gauges: location, region and PUB/PUR folds",
                "driver": "stefaland_camels_attributes",
                "args": {"urlpath": [f"{ATTRIBUTES_DIR}/camels_topo.txt", f"{ATTRIBUTES_DIR}/camels_name.txt",
                                     f"{ATTRIBUTES_DIR}/synthetic_folds.txt"]},
                "metadata": {
                    "role": "sites",
                    "site_id": "gauge_id",
                    "columns": {"lat": "gauge_lat", "lon": "gauge_lon", "region": "region",
                                "fold_pub": "pub_fold", "fold_pur": "pur_fold"},
                },
            },
            "forcing": {
                "description": "synthetic daily basin-mean forcings (CAMELS forcing file format)",
                "driver": "stefaland_camels_forcing",
                "args": {"urlpath": "{{ CATALOG_DIR }}/basin_mean_forcing/synthetic/*/*_forcing_leap.txt"},
                "metadata": {
                    "role": "dynamic",
                    "variables": {name: {"units": units, "group": "climate", "description": description}
                                  for name, (units, description) in FORCING_VARIABLES.items()},
                },
            },
            "attributes": {
                "description": "static catchment attributes (CAMELS attribute tables)",
                "driver": "stefaland_camels_attributes",
                "args": {"urlpath": [f"{ATTRIBUTES_DIR}/camels_{table}.txt"
                                     for table in ("topo", "clim", "soil", "geol", "vege")]},
                "metadata": {"role": "static", "variables": static},
            },
            "streamflow": {
                "description": "synthetic gauge records (USGS daily values format)",
                "driver": "stefaland_camels_streamflow",
                "args": {"urlpath": "{{ CATALOG_DIR }}/usgs_streamflow/*/*_streamflow_qc.txt"},
                "metadata": {
                    "role": "target",
                    "variables": {"streamflow": {
                        "from": "QObs", "units": "ft3/s", "per_area": "area_gages2", "group": "",
                        "description": "daily discharge converted to mm/day by basin area",
                    }},
                },
            },
        },
    }


def catalog_yaml(start_year: int, years: int) -> str:
    header = ("# Virtual world written by `stefaland data synth` (stefaland.synth).\n"
              "# Synthetic data in the CAMELS-US file formats; see docs/DESIGN.md for the metadata.\n")
    return header + yaml.safe_dump(catalog_dict(start_year, years), sort_keys=False, width=120)
