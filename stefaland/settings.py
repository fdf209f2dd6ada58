"""Where StefaLand's runs live, which store they read and which image runs them: flag, else
environment, else a settings file.

Why: ``stefaland submit pretrain --gpus 6`` and ``stefaland report camels --split pub`` should run as
typed once a user (or a cluster admin) has said, once, where the store and the run root are. Each
setting is looked up in this order, and the first that gives a value wins:

1. the command-line flag (``--store``, ``--runs``, ``--image``);
2. the environment (``STEFALAND_STORE``, ``STEFALAND_RUNS``, ``STEFALAND_IMAGE``);
3. a settings file: ``stefaland.yaml`` in the working directory, else
   ``$XDG_CONFIG_HOME/stefaland/stefaland.yaml`` (``~/.config/stefaland/stefaland.yaml``)::

       store: s3://bucket/stores/global.zarr
       runs: s3://bucket/runs
       image: registry.example.org/stefaland:0.1.0

Unknown keys in the file are refused (a typo never silently falls back to nothing). The paper's run
configs ship inside the package (``stefaland/configs/``, the repository's ``configs/`` links there);
:func:`packaged_config` gives the path of one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from . import fileio
from .errors import StefaLandError
from .yaml_mapping import load_mapping

SETTINGS_FILE = "stefaland.yaml"
ENVIRONMENT = {"store": "STEFALAND_STORE", "runs": "STEFALAND_RUNS", "image": "STEFALAND_IMAGE"}
FLAGS = {"store": "--store", "runs": "--runs", "image": "--image"}


class Settings(BaseModel):
    """The keys a settings file may hold; every one is optional."""

    model_config = ConfigDict(extra="forbid")

    store: str | None = None
    runs: str | None = None
    image: str | None = None


def config_dir() -> Path:
    """The user's configuration folder for StefaLand (XDG on Linux and macOS, APPDATA on Windows)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.environ.get("APPDATA") or os.path.join(Path.home(), ".config")
    return Path(base) / "stefaland"


def settings_paths() -> list[Path]:
    """Where a settings file is looked for, first match wins."""
    return [Path.cwd() / SETTINGS_FILE, config_dir() / SETTINGS_FILE]


def settings_file() -> Path | None:
    return next((path for path in settings_paths() if path.is_file()), None)


def load_settings(path: Path | None = None) -> tuple[Settings, Path | None]:
    """The settings file's values (all None when there is none) and the file they came from."""
    path = path or settings_file()
    if path is None:
        return Settings(), None
    raw = load_mapping(path.read_bytes(), str(path), "a settings file must be a mapping (store, runs, image)")
    try:
        return Settings.model_validate(raw), path
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "settings"
            message = "unknown key (known: store, runs, image)" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{key}: {message}")
        raise StefaLandError(f"{path}: {'; '.join(problems)}") from None


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from (``--runs``, ``$STEFALAND_RUNS``, a file path)."""

    value: str | None
    origin: str | None

    def describe(self) -> str:
        return f"{self.value} (from {self.origin})" if self.origin else str(self.value)


def resolve(name: str, flag: str | None) -> Resolved:
    """``name`` (store, runs or image): the flag's value, else the environment's, else the file's."""
    if flag:
        return Resolved(flag, FLAGS[name])
    env = os.environ.get(ENVIRONMENT[name])
    if env:
        return Resolved(env, f"${ENVIRONMENT[name]}")
    settings, path = load_settings()
    value = getattr(settings, name)
    if value:
        return Resolved(value, str(path))
    return Resolved(None, None)


_WHAT = {"store": "the store", "runs": "the run root", "image": "the image"}


def how_to_set(*names: str) -> str:
    """One line's worth of where each missing setting can come from."""
    env = " and ".join(f"${ENVIRONMENT[n]}" for n in names)
    flags = " and ".join(FLAGS[n] for n in names)
    keys = " and ".join(f"{n}:" for n in names)
    return f"set {env} (or pass {flags}, or write {keys} in ./{SETTINGS_FILE} or {config_dir() / SETTINGS_FILE})"


def require(**flags: str | None) -> dict[str, Resolved]:
    """Resolve every named setting, or fail in one line naming all that are missing."""
    resolved = {name: resolve(name, value) for name, value in flags.items()}
    missing = [name for name, r in resolved.items() if not r.value]
    if missing:
        what = " and ".join(_WHAT[n] for n in missing)
        raise StefaLandError(f"nothing says where {what} {'is' if len(missing) == 1 else 'are'}: {how_to_set(*missing)}")
    return resolved


def fresh_run_folder(root: str, kind: str, now: datetime | None = None) -> str:
    """``<root>/<kind>-YYYYmmdd-HHMMSS-<6 hex>``, a name nothing under ``root`` holds yet."""
    now = now or datetime.now(timezone.utc)
    for _ in range(20):
        url = fileio.join(root.rstrip("/"), f"{kind}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}")
        if not fileio.exists(url):
            return url
    raise StefaLandError(f"{root}: could not find a fresh run folder name for {kind}")  # pragma: no cover


def packaged_config(name: str) -> str:
    """Path of a run config shipped in the package (``stefaland/configs/<name>``)."""
    target = resources.files("stefaland").joinpath("configs").joinpath(name)
    if not target.is_file():
        known = sorted(p.name for p in resources.files("stefaland").joinpath("configs").iterdir()
                       if p.name.endswith(".yaml"))
        raise StefaLandError(f"no packaged config {name!r} (packaged: {', '.join(known)})")
    return str(target)
