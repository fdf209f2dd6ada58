"""Catalogs are data, never code: template payloads never run, and each is one line naming the source.

Plain intake renders ``args`` with a full Jinja2 environment, so each payload below (tried against
intake 2.0.9 directly) would create its marker file; through StefaLand none may.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stefaland.catalog import load_catalog
from stefaland.errors import StefaLandError
from stefaland_cli.main import cli

PAYLOADS = {
    "mro": ("{{ ''.__class__.__mro__[1].__subclasses__() }}"
            "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARK') }}"),
    "cycler": "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('touch MARK').read() }}",
    "set": "{% set x = cycler.__init__.__globals__.os.popen('touch MARK').read() %}/data",
    "for": ("{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'Popen' %}"
            "{{ c(['touch', 'MARK']) }}{% endif %}{% endfor %}"),
    "shell": "{{ shell('touch MARK') }}",
    "attr_filter": "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].popen('touch MARK').read() }}",
    "param_attr": "{{ root.__class__.__init__.__globals__ }}{{ namespace.__init__.__globals__.os.system('touch MARK') }}",
    "env_attr": "{{ env('HOME').__class__.__mro__ }}",
}


def _catalog(folder: Path, sites_urlpath: str, camels: Path, extra: str = "", root_default: str = "") -> Path:
    """A CAMELS catalog on the real sample whose site table path is ``sites_urlpath``."""
    text = f"""
metadata:
  stefaland: {{name: sandbox, sites: sites}}
  parameters:
    root: {{description: CAMELS root, type: str, default: "{root_default or camels}"}}
{extra}
sources:
  sites:
    driver: stefaland_camels_attributes
    args:
      urlpath: "{sites_urlpath}"
    metadata: {{role: sites, site_id: gauge_id, columns: {{lat: gauge_lat, lon: gauge_lon, region: huc_02}}}}
  forcing:
    driver: stefaland_camels_forcing
    args: {{urlpath: "{{{{ root }}}}/basin_mean_forcing/nldas/**/*_lump_nldas_forcing_leap.txt"}}
    metadata:
      role: dynamic
      variables: {{prcp: {{units: mm/day}}}}
"""
    path = folder / "catalog.yaml"
    path.write_text(text)
    return path


def _quoted(payload: str, marker: Path) -> str:
    return payload.replace("MARK", str(marker)).replace('"', '\\"')


@pytest.mark.parametrize("style", sorted(PAYLOADS))
def test_payload_never_runs_in_validate_or_build(style: str, tmp_path: Path, camels_sample_root: Path) -> None:
    marker = tmp_path / "PWNED"
    catalog = _catalog(tmp_path, _quoted(PAYLOADS[style], marker), camels_sample_root)
    runner = CliRunner()
    for command in (["catalog", "validate", str(catalog)],
                    ["data", "build", "--catalog", str(catalog), "--out", str(tmp_path / "out.zarr"), "--quiet"]):
        result = runner.invoke(cli, command)
        assert not marker.exists(), f"{style}: payload ran during {command[:2]}"
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "source sites" in lines[0] and "catalog.yaml" in lines[0], lines[0]
        assert "Traceback" not in result.output
    assert not (tmp_path / "out.zarr").exists()


def test_shell_in_a_parameter_default_is_refused(tmp_path: Path, camels_sample_root: Path) -> None:
    marker = tmp_path / "PWNED"
    catalog = _catalog(tmp_path, "{{ root }}/camels_attributes_v2.0/camels_topo.txt", camels_sample_root,
                       root_default=f"shell(touch {marker})")
    with pytest.raises(StefaLandError, match=r"parameter root: default 'shell\(touch .*' is not allowed"):
        load_catalog(str(catalog))
    assert not marker.exists()


def test_documented_substitutions_still_work(tmp_path: Path, camels_sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters, env('NAME'), CATALOG_DIR and env(NAME) defaults all resolve; validate passes on real files."""
    monkeypatch.setenv("SANDBOX_TABLES", "camels_attributes_v2.0")
    (tmp_path / "tables").symlink_to(camels_sample_root / "camels_attributes_v2.0")
    catalog = _catalog(tmp_path, "{{ CATALOG_DIR }}/tables/camels_topo.txt", camels_sample_root)
    text = catalog.read_text().replace("/basin_mean_forcing", "/{{ env('SANDBOX_NLDAS_PARENT') }}")
    catalog.write_text(text)
    monkeypatch.setenv("SANDBOX_NLDAS_PARENT", "basin_mean_forcing")
    spec = load_catalog(str(catalog))
    assert spec.open("sites").urlpath == f"{tmp_path}/tables/camels_topo.txt"
    assert spec.open("forcing").urlpath == f"{camels_sample_root}/basin_mean_forcing/nldas/**/*_lump_nldas_forcing_leap.txt"
    result = CliRunner().invoke(cli, ["catalog", "validate", str(catalog)])
    assert result.exit_code == 0, result.output
    assert "671 sites" in result.output


def test_unset_environment_variable_is_named(tmp_path: Path, camels_sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_UNSET_ROOT", raising=False)
    catalog = _catalog(tmp_path, "{{ root }}/camels_attributes_v2.0/camels_topo.txt", camels_sample_root,
                       root_default="env(SANDBOX_UNSET_ROOT)")
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(catalog), "--out", str(tmp_path / "o.zarr"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "environment variable SANDBOX_UNSET_ROOT is not set" in result.output


def test_environment_value_holding_a_template_is_refused(tmp_path: Path, camels_sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value substituted by us must not become a template that intake would render afterwards."""
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("SANDBOX_EVIL", "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}")
    catalog = _catalog(tmp_path, "{{ env('SANDBOX_EVIL') }}/camels_topo.txt", camels_sample_root)
    with pytest.raises(StefaLandError, match="environment variable SANDBOX_EVIL holds template markup"):
        load_catalog(str(catalog))
    assert not marker.exists()


@pytest.mark.parametrize("extra, driver, message", [
    ("plugins: {source: [{module: os}]}", "stefaland_camels_attributes", "'plugins:' is not allowed"),
    ("", "intake.source.csv.CSVSource", "driver 'intake.source.csv.CSVSource' is not allowed"),
    ("", "yaml_file_cat", "driver 'yaml_file_cat' is not allowed"),
    ("", "no_such_driver", "unknown driver 'no_such_driver'"),
])
def test_code_loading_entries_are_refused(extra: str, driver: str, message: str, tmp_path: Path, camels_sample_root: Path) -> None:
    catalog = _catalog(tmp_path, "{{ root }}/camels_attributes_v2.0/camels_topo.txt", camels_sample_root)
    text = catalog.read_text().replace("driver: stefaland_camels_attributes", f"driver: {driver}")
    catalog.write_text(f"{extra}\n{text}" if extra else text)
    with pytest.raises(StefaLandError, match=message):
        load_catalog(str(catalog))


def test_python_yaml_tags_stay_refused(tmp_path: Path, camels_sample_root: Path) -> None:
    marker = tmp_path / "PWNED"
    catalog = _catalog(tmp_path, "x", camels_sample_root)
    catalog.write_text(catalog.read_text().replace('urlpath: "x"', f'urlpath: !!python/object/apply:os.system ["touch {marker}"]'))
    result = CliRunner().invoke(cli, ["catalog", "validate", str(catalog)])
    assert result.exit_code == 1 and "YAML error" in result.output and result.output.count("\n") == 1
    assert not marker.exists()


def test_cls_entry_is_refused(tmp_path: Path, camels_sample_root: Path) -> None:
    catalog = _catalog(tmp_path, "{{ root }}/camels_attributes_v2.0/camels_topo.txt", camels_sample_root)
    catalog.write_text(catalog.read_text().replace("  forcing:\n", "  forcing:\n    cls: os._wrap_close\n"))
    with pytest.raises(StefaLandError, match="source forcing: 'cls' entries are not allowed"):
        load_catalog(str(catalog))


def test_optional_setting_falls_back_to_the_catalog_and_joins_its_digest(tmp_path: Path, camels_sample_root: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``env(NAME, literal)``: the environment when set, else the catalog's literal; never "unset"; a bool
    read as a word ("false" is False, unlike intake's coerce); the value is part of the catalog's digest."""
    extra = """    layer: {description: a setting, type: float, default: "env(SANDBOX_LAYER, 0.10)"}
    strict: {description: a switch, type: bool, default: "env(SANDBOX_STRICT, false)"}"""
    catalog = _catalog(tmp_path, "{{ root }}/camels_attributes_v2.0/camels_topo.txt", camels_sample_root, extra=extra)
    urlpath = "urlpath: \"{{ root }}/camels_attributes_v2.0/camels_topo.txt\""
    text = catalog.read_text().replace(urlpath, urlpath + "\n      layer: \"{{ layer }}\"\n      strict: \"{{ strict }}\"")
    catalog.write_text(text)
    for name in ("SANDBOX_LAYER", "SANDBOX_STRICT"):
        monkeypatch.delenv(name, raising=False)
    spec = load_catalog(str(catalog))
    entry = spec.catalog._entries["sites"].describe()["args"]
    assert (entry["layer"], entry["strict"]) == (0.1, False) and not spec.unset
    monkeypatch.setenv("SANDBOX_LAYER", "0.2")
    monkeypatch.setenv("SANDBOX_STRICT", "true")
    changed = load_catalog(str(catalog))
    entry = changed.catalog._entries["sites"].describe()["args"]
    assert (entry["layer"], entry["strict"]) == (0.2, True)
    assert changed.sha256 != spec.sha256  # a store built with another setting is not "up to date"
    monkeypatch.setenv("SANDBOX_STRICT", "maybe")
    with pytest.raises(StefaLandError, match=r"parameter strict: 'maybe' is not a bool \(use true or false\)"):
        load_catalog(str(catalog))
