"""Fingerprints of the files a build reads, so a resume or an "up to date" answer sees the data.

The catalog's hash says which sources and options were asked for; it says nothing about the files
behind them. Each input file therefore gets a fingerprint:

* local file: size and modification time (ns), plus a SHA-256 of the content when the file is at
  most ``HASH_LIMIT`` bytes (attribute tables, site lists: cheap to read, and edited in place most
  often); big series files are judged by size and mtime (reading gigabytes on every build would
  make "up to date" cost as much as a build);
* object on S3 (or any remote store): size and ETag (the server's content hash) — free with the listing;
* a folder (a zarr or a directory of files): one digest over every file's path, size and mtime.

The files are those named by each selected source's ``urlpath`` (or, for the product drivers,
their ``input_paths()``) after the catalog's templating (globs expanded), the site table's, and the
basin polygons'. A source whose driver names no file is covered by the catalog hash only.

The record is kept with the store, so its keys are masked: a part of a path that came from the
environment (``{{ env('NAME') }}`` or a parameter defaulting to ``env(NAME)``) reads ``env(NAME)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from ..catalog import CatalogSpec, SourceSpec
from ..fileio import filesystem, is_remote, join

HASH_LIMIT = 256 * 1024


def _patterns(catalog: CatalogSpec, specs: Iterable[SourceSpec]) -> list[tuple[str, dict | None]]:
    patterns: list[tuple[str, dict | None]] = []
    for spec in specs:
        try:
            source = catalog.open(spec.name)
        except Exception:  # noqa: BLE001 - the build itself reports a source that cannot open
            continue
        # product drivers know their files (a daily tree per variable, a .bil and its .hdr, a shapefile's parts)
        urlpath = source.input_paths() if hasattr(source, "input_paths") else getattr(source, "urlpath", None)
        options = getattr(source, "storage_options", None) or None
        for pattern in [urlpath] if isinstance(urlpath, str) else list(urlpath or []):
            patterns.append((str(pattern), options))
        if spec.basins and spec.basins.get("urlpath"):
            path = str(spec.basins["urlpath"])
            if not (is_remote(path) or path.startswith("/")):
                base = catalog.url.rsplit("/", 1)[0] if "/" in catalog.url else "."
                path = join(base, path)
            patterns.append((path, None))
    return patterns


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


def _file_fingerprint(fs, path: str, info: dict, remote: bool) -> str:
    size = int(info.get("size") or 0)
    if remote:
        return f"size={size} etag={str(info.get('ETag') or info.get('etag') or info.get('LastModified')).strip(chr(34))}"
    stat = os.stat(path)
    text = f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
    if stat.st_size <= HASH_LIMIT:
        with open(path, "rb") as handle:
            text += f" sha256={hashlib.sha256(handle.read()).hexdigest()}"
    return text


def _folder_fingerprint(fs, path: str) -> str:
    digest = hashlib.sha256()
    found = fs.find(path, withdirs=False, detail=True)
    for name in sorted(found):
        info = found[name]
        stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or info.get("created")
        digest.update(f"{name}|{info.get('size')}|{stamp}\n".encode())
    return f"folder files={len(found)} digest={digest.hexdigest()[:16]}"


def fingerprint_inputs(catalog: CatalogSpec, specs: Iterable[SourceSpec]) -> dict[str, str]:
    """``{file url: fingerprint}`` of every file the build of ``specs`` (and the site table) reads."""
    chosen = list(specs)
    if catalog.sites_source not in {s.name for s in chosen}:
        chosen.append(catalog.sources[catalog.sites_source])
    prints: dict[str, str] = {}
    for pattern, options in _patterns(catalog, chosen):
        fs, path = filesystem(pattern, options)
        remote, prefix = is_remote(pattern), _protocol(pattern)
        try:
            if any(ch in path for ch in "*?["):
                matches = fs.glob(path, detail=True)
            else:
                matches = {path: fs.info(path)}
        except (FileNotFoundError, OSError):
            prints[catalog.mask(pattern)] = "absent"
            continue
        if not matches:
            prints[catalog.mask(pattern)] = "no match"
        for name, info in sorted(matches.items()):
            url = prefix + name if remote and not name.startswith(prefix) else name
            if info.get("type") == "directory":
                prints[catalog.mask(url)] = _folder_fingerprint(fs, name)
            else:
                prints[catalog.mask(url)] = _file_fingerprint(fs, name, info, remote)
    return prints


def first_change(before: dict[str, str], now: dict[str, str]) -> str | None:
    """One phrase naming the first input that differs (``None`` when none does)."""
    for url in sorted(set(before) | set(now)):
        old, new = before.get(url), now.get(url)
        if old == new or (old and new and _same_content(old, new)):
            continue
        if old is None:
            return f"input {url} is new"
        if new is None or new in ("absent", "no match"):
            return f"input {url} is gone"
        return f"input {url} changed ({_difference(old, new)})"
    return None


def _fields(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def _same_content(old: str, new: str) -> bool:
    """A hashed file whose size and hash are unchanged is the same input, whatever its mtime says."""
    a, b = _fields(old), _fields(new)
    return "sha256" in a and "sha256" in b and a["sha256"] == b["sha256"] and a.get("size") == b.get("size")


def _difference(old: str, new: str) -> str:
    a, b = _fields(old), _fields(new)
    changed = [key for key in ("size", "sha256", "etag", "mtime_ns", "files", "digest") if a.get(key) != b.get(key)]
    if "size" in changed:
        return f"size {a.get('size')} -> {b.get('size')} bytes"
    return "content" if {"sha256", "etag", "digest"} & set(changed) else "modified: " + ", ".join(changed or ["metadata"])
