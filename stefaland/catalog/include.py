"""Sources borrowed from another catalog, so each global product is declared in one place.

ISMN stations and WoSIS profiles take their forcings and attributes from the same Table C1
products as the pretraining sites (``catalog/global.yaml``). Copying those thirteen entries into
``ismn.yaml`` and ``wosis.yaml`` would let the three drift apart (a fixed file name, a changed
unit); instead a catalog names them:

.. code-block:: yaml

    metadata:
      stefaland:
        include:
          - catalog: global.yaml          # relative to this catalog's folder, or a path / s3:// URL
            sources: [mswx, mswep, gmted]

The included catalog is rendered by the same sandbox (:mod:`.template`) with its own parameters
(e.g. ``STEFALAND_GLOBAL_ROOT``), and the named source entries — already resolved, nothing left
to template — are added to this catalog's document before intake sees it. Includes do not nest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import StefaLandError
from ..fileio import read_bytes
from ..yaml_mapping import load_mapping
from .template import Rendered, catalog_dir, refuse_protocol, render_catalog


def _included_url(url: str, name: str) -> str:
    refuse_protocol(name, f"catalog {url}: metadata.stefaland.include catalog")
    if "://" in name or name.startswith("/"):
        return name
    return f"{catalog_dir(url)}/{name}"


def _parse_included(url: str, included: str, raw: bytes) -> dict[str, Any]:
    """The included catalog's document: a mapping with ``sources:``, and no includes of its own."""
    parsed = load_mapping(raw, f"catalog {included} (included by {url})", "no 'sources:' mapping at the top level")
    if not isinstance(parsed.get("sources"), dict):
        raise StefaLandError(f"catalog {url}: included catalog {included} has no 'sources:' mapping at the top level")
    if ((parsed.get("metadata") or {}).get("stefaland") or {}).get("include"):
        raise StefaLandError(f"catalog {url}: included catalog {included} has includes of its own; includes do not nest")
    return parsed


def _entries(url: str, include: Any) -> list[tuple[str, list[str]]]:
    if include is None:
        return []
    if not isinstance(include, list):
        raise StefaLandError(f"catalog {url}: metadata.stefaland.include must be a list of {{catalog, sources}}")
    entries = []
    for item in include:
        if not isinstance(item, dict) or not isinstance(item.get("catalog"), str) or not isinstance(item.get("sources"), list):
            raise StefaLandError(f"catalog {url}: each include needs 'catalog' (a path) and 'sources' (a list of names)")
        entries.append((_included_url(url, item["catalog"]), [str(s) for s in item["sources"]]))
    return entries


def add_included_sources(url: str, top_rendered: Rendered) -> str:
    """Add the included catalogs' sources to ``top_rendered.document`` (their unset variables and
    environment masks to its ``unset`` and ``masks``).

    Returns a digest of the included catalogs' bytes ("" when there are none), so that a store built from this catalog is
    no longer "up to date" when an included catalog changes.
    """
    document, unset = top_rendered.document, top_rendered.unset
    top = (document.get("metadata") or {}).get("stefaland") or {}
    entries = _entries(url, top.get("include"))
    if not entries:
        return ""  # a catalog without includes keeps the digest of its own bytes
    digest = hashlib.sha256()
    for included, names in entries:
        raw = read_bytes(included)
        digest.update(raw)
        rendered = render_catalog(included, _parse_included(url, included, raw))
        if rendered.settings:  # its env(NAME, literal) values, as for the including catalog's own
            digest.update(repr(sorted(rendered.settings.items())).encode())
        top_rendered.masks.update(rendered.masks)
        sources = rendered.document["sources"]
        for name in names:
            if name not in sources:
                raise StefaLandError(f"catalog {url}: include names source {name}, which {included} does not have")
            if name in document["sources"]:
                raise StefaLandError(f"catalog {url}: source {name} is both declared here and included from {included}")
            document["sources"][name] = sources[name]
            if name in rendered.unset:
                unset[name] = rendered.unset[name]
    return digest.hexdigest()
