"""What comes from the environment stays out of what StefaLand shows, records and sends.

A catalog may read ``env('NAME')``; these cases check that such a value never reaches a variable
description (``catalog show``, the store), the input-fingerprint record, or a request that
``catalog validate`` sends; that credential-named variables and ``http(s)://`` sources are refused;
and that a malformed include and a YAML alias bomb are one line, quickly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.synth import write_virtual_world
from stefaland.yaml_mapping import load_mapping
from stefaland_cli.main import cli

from _guarded import one_line_error
from _loopback_http import serve

SECRET = "s3cr3t-VALUE-7f2c"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny virtual world (6 sites, 1 year); its data folder has a name no output may hold."""
    return write_virtual_world(tmp_path_factory.mktemp("w") / "private-root-9d41", n_sites=6, years=1, seed=3, quiet=True)


def _copy(world: Path, folder: Path, edit) -> Path:
    """The world's catalog, edited, written to ``folder`` (so CATALOG_DIR is not the data folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.yaml"
    path.write_text(edit(world.read_text()))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- descriptive metadata ----------------------------------------------------------------------

DESCRIPTION = "description: daily precipitation (basin mean)"


@pytest.mark.parametrize("template, field", [
    ("{{ env('STEFALAND_TEST_NOTE') }}", "metadata.variables.prcp.description"),
    ("{{ note }}", "metadata.variables.prcp.description"),  # a parameter whose default is env(...)
])
def test_environment_in_a_description_is_refused(template: str, field: str, world: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEFALAND_TEST_NOTE", SECRET)
    parameters = "  parameters:\n    note: {type: str, default: \"env(STEFALAND_TEST_NOTE)\"}\n"

    def edit(text: str) -> str:
        text = text.replace(DESCRIPTION, f"description: \"precipitation {template}\"")
        return text.replace("metadata:\n", "metadata:\n" + parameters, 1)

    catalog = _copy(world, tmp_path / "cat", edit)
    text = catalog.read_text().replace("{{ CATALOG_DIR }}", str(world.parent))
    catalog.write_text(text)
    out = tmp_path / "out.zarr"
    for command in (["catalog", "show", str(catalog)],
                    ["data", "build", "--catalog", str(catalog), "--out", str(out), "--quiet"]):
        line = one_line_error(_invoke(*command), str(catalog), "source forcing", field, "descriptive metadata")
        assert SECRET not in line
    assert not out.exists()


def test_units_and_other_metadata_refuse_the_environment_too(world: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEFALAND_TEST_UNIT", "mm/day")
    catalog = _copy(world, tmp_path, lambda t: t.replace("units: mm/day", "units: \"{{ env('STEFALAND_TEST_UNIT') }}\"", 1))
    one_line_error(_invoke("catalog", "show", str(catalog)), "metadata.variables.", ".units", "descriptive metadata")


def test_shipped_catalogs_keep_their_environment_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """env(NAME) and env(NAME, literal) defaults used in args: all five shipped catalogs load."""
    root = Path(__file__).resolve().parents[1] / "catalog"
    for name in ("CAMELS_ROOT", "STEFALAND_GLOBAL_ROOT", "CARAVAN_ROOT", "ISMN_ARCHIVE", "SOIL_PROFILES_CSV"):
        monkeypatch.setenv(name, "s3://example-bucket/prefix")
    monkeypatch.setenv("ISMN_DEPTH_FROM", "0.05")
    for path in sorted(root.glob("*.yaml")):
        result = _invoke("catalog", "show", str(path))
        assert result.exit_code == 0, (path.name, result.output)


# --- credentials -------------------------------------------------------------------------------

CREDENTIALS = ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "DB_PASSWORD",
               "MY_API_KEY", "azure_storage_connection_string"]


@pytest.mark.parametrize("variable", CREDENTIALS)
@pytest.mark.parametrize("style", ["env_call", "parameter_default"])
def test_a_credential_named_variable_is_refused(variable: str, style: str, world: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, SECRET)
    if style == "env_call":
        def edit(text: str) -> str:
            return text.replace("_forcing_leap.txt", f'_forcing_leap.txt?k={{{{ env("{variable}") }}}}')
    else:
        def edit(text: str) -> str:
            parameters = f"  parameters:\n    key: {{type: str, default: \"env({variable})\"}}\n"
            return text.replace("metadata:\n", "metadata:\n" + parameters, 1)
    catalog = _copy(world, tmp_path, edit)
    for command in ("validate", "show"):
        line = one_line_error(_invoke("catalog", command, str(catalog)), str(catalog), f"env({variable}) names a credential",
                              "standard AWS variables")
        assert SECRET not in line


# --- protocols: validate sends no request ------------------------------------------------------

@pytest.fixture()
def listener() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server on 127.0.0.1 recording every request line it receives."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            seen.append(self.path)
            body = b"site,lat,lon\na,1,2\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    with serve(Handler) as port:
        yield f"127.0.0.1:{port}", seen


def _sites_catalog(folder: Path, urlpath: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.yaml"
    path.write_text(f"""
metadata:
  stefaland: {{name: remote, sites: sites}}
sources:
  sites:
    driver: csv
    args: {{urlpath: "{urlpath}"}}
    metadata: {{role: sites, site_id: site}}
  forcing:
    driver: csv
    args: {{urlpath: "{{{{ CATALOG_DIR }}}}/forcing.csv"}}
    metadata:
      role: dynamic
      variables: {{prcp: {{units: mm/day}}}}
""")
    return path


@pytest.mark.parametrize("urlpath, protocol", [
    ("http://HOST/sites.csv?k={{ env('STEFALAND_TEST_QUERY') }}", "http"),
    ("http://HOST/sites.csv?k={{ env('AWS_SECRET_ACCESS_KEY') }}", ""),  # refused as a credential first
    ("http://HOST/sites.csv", "http"),
    ("https://HOST/sites.csv", "https"),
    ("simplecache::http://HOST/sites.csv", "http"),
    ("{{ env('STEFALAND_TEST_ROOT') }}/sites.csv", "http"),  # the protocol arrives through the environment
    ("http://user:pw@HOST/sites.csv", "http"),
])
def test_validate_sends_no_request_to_an_http_source(urlpath: str, protocol: str, listener, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    host, seen = listener
    monkeypatch.setenv("STEFALAND_TEST_QUERY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("STEFALAND_TEST_ROOT", f"http://{host}")
    catalog = _sites_catalog(tmp_path, urlpath.replace("HOST", host))
    line = one_line_error(_invoke("catalog", "validate", str(catalog)), str(catalog), "source sites", "args.urlpath")
    assert f"protocol {protocol}:// is not allowed" in line if protocol else "names a credential" in line
    assert SECRET not in line and host not in line  # the message names the field, never the value
    assert seen == [], f"validate sent {seen}"


def test_an_include_over_http_is_refused_without_a_request(listener, tmp_path: Path) -> None:
    host, seen = listener
    catalog = _sites_catalog(tmp_path, "{{ CATALOG_DIR }}/sites.csv")
    catalog.write_text(catalog.read_text().replace(
        "stefaland: {name: remote, sites: sites}",
        f"stefaland: {{name: remote, sites: sites, include: [{{catalog: 'http://{host}/global.yaml', sources: [mswx]}}]}}"))
    one_line_error(_invoke("catalog", "show", str(catalog)), "include catalog", "protocol http:// is not allowed")
    assert seen == []


# --- the input-fingerprint record and the store ------------------------------------------------

def test_the_store_records_env_paths_masked(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths from env('NAME') and from an env(NAME) parameter are read for real but recorded as env(NAME)."""
    data = str(world.parent)
    monkeypatch.setenv("STEFALAND_TEST_FORCING", f"{data}/basin_mean_forcing")
    monkeypatch.setenv("STEFALAND_TEST_WORLD_ROOT", data)
    parameters = "  parameters:\n    root: {type: str, default: \"env(STEFALAND_TEST_WORLD_ROOT)\"}\n"

    def edit(text: str) -> str:
        text = text.replace("metadata:\n", "metadata:\n" + parameters, 1)
        text = text.replace("{{ CATALOG_DIR }}/basin_mean_forcing", '{{ env("STEFALAND_TEST_FORCING") }}')
        return text.replace("{{ CATALOG_DIR }}", "{{ root }}")

    catalog = _copy(world, tmp_path / "cat", edit)
    out = tmp_path / "out.zarr"
    build = ("data", "build", "--catalog", str(catalog), "--out", str(out), "--shard-size", "3", "--quiet")
    built = _invoke(*build)
    assert built.exit_code == 0, built.output
    marker = json.loads((out / ".stefaland" / "zarr.json").read_text())["attributes"]
    inputs = marker["inputs"]
    assert inputs and all(data not in url for url in inputs), inputs
    assert any(url.startswith("env(STEFALAND_TEST_FORCING)/synthetic/") for url in inputs), inputs
    assert any(url.startswith("env(STEFALAND_TEST_WORLD_ROOT)/camels_attributes_v2.0/") for url in inputs), inputs
    for document in out.rglob("*.json"):
        assert "private-root-9d41" not in document.read_text(), document
    assert "up to date" in _invoke(*build).output


# --- weak cases: includes and alias bombs ------------------------------------------------------

def test_an_included_catalog_without_sources_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("metadata: {version: 1}\n")
    catalog = _sites_catalog(tmp_path, "{{ CATALOG_DIR }}/sites.csv")
    catalog.write_text(catalog.read_text().replace(
        "stefaland: {name: remote, sites: sites}",
        "stefaland: {name: remote, sites: sites, include: [{catalog: empty.yaml, sources: [mswx]}]}"))
    for command in ("show", "validate"):
        one_line_error(_invoke("catalog", command, str(catalog)), f"included catalog {tmp_path}/empty.yaml",
                       "no 'sources:' mapping")


BOMB = """
metadata:
  stefaland: {name: bomb, sites: sites}
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
sources:
  sites:
    driver: csv
    args: {urlpath: "{{ CATALOG_DIR }}/sites.csv"}
    metadata: {role: sites, site_id: site, note: *g}
"""


@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_is_refused_in_one_line_at_once(tmp_path: Path) -> None:
    with pytest.raises(StefaLandError, match=r"^bomb\.yaml: refused: its aliases \(\*name\) expand"):
        load_mapping(BOMB, "bomb.yaml", "a mapping")  # parsing alone is cheap: the expansion is counted
    with pytest.raises(StefaLandError, match="an alias refers to a node that contains it"):
        load_mapping("a: &x [1, *x]\n", "loop.yaml", "a mapping")
    catalog = tmp_path / "bomb.yaml"
    catalog.write_text(BOMB)
    for command in ("show", "validate"):
        started = time.perf_counter()
        one_line_error(_invoke("catalog", command, str(catalog)), str(catalog), "alias bomb")
        assert time.perf_counter() - started < 2.0
    included = tmp_path / "uses_bomb.yaml"
    included.write_text(_sites_catalog(tmp_path / "inc", "x").read_text().replace(
        "stefaland: {name: remote, sites: sites}",
        "stefaland: {name: remote, sites: sites, include: [{catalog: bomb.yaml, sources: [sites]}]}"))
    one_line_error(_invoke("catalog", "show", str(included)), f"catalog {catalog} (included by", "alias bomb")


def test_ordinary_aliases_still_work() -> None:
    """ismn.yaml shares its args between sources with an anchor; merges and reuse stay allowed."""
    document = load_mapping("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: 2}\n", "x.yaml", "a mapping")
    assert document == {"a": {"b": 1}, "c": {"b": 1}, "d": {"b": 1, "e": 2}}
