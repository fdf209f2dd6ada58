"""Random forest on StefaLand embeddings vs on the raw attributes, for one soil property.

    stefaland embed runs/pretrain --store world.zarr --out emb.zarr \
        --hide clay_frac --hide sand_frac --hide silt_frac
    python examples/embeddings_random_forest.py --store world.zarr --embeddings emb.zarr --target clay_frac

The texture fractions are hidden from the encoder (``--hide``) and dropped from the raw
attributes, so neither model sees the property it predicts. Scores are cross-validated R² (sites
split into folds, each site predicted by a forest that never saw it). Prints one line per feature
set and, with ``--json``, writes the scores.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import xarray as xr
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import KFold, cross_val_predict

TEXTURE = ("clay_frac", "sand_frac", "silt_frac")


def r2(obs: np.ndarray, sim: np.ndarray) -> float:
    return float(1.0 - np.sum((sim - obs) ** 2) / np.sum((obs - obs.mean()) ** 2))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the store the embeddings were made from")
    parser.add_argument("--embeddings", required=True, help="output of `stefaland embed`")
    parser.add_argument("--target", default="clay_frac", help="static variable of the store to predict")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--json", default=None, help="write the scores here")
    args = parser.parse_args(argv)

    store = xr.open_zarr(args.store, consolidated=False)
    emb = xr.open_zarr(args.embeddings, consolidated=False)
    svars = [str(v) for v in store["svar"].values]
    order = {str(site): i for i, site in enumerate(store["site"].values)}
    rows = np.asarray([order[str(site)] for site in emb["site"].values])  # align the two by site id
    static = store["static"].values[rows]  # (site, svar)
    y = static[:, svars.index(args.target)].astype(np.float64)
    keep = [i for i, name in enumerate(svars) if name not in TEXTURE and name != args.target]
    features = {
        "raw attributes": np.nan_to_num(static[:, keep]),  # (site, n_attr)
        "static embedding": emb["static_embedding"].values,  # (site, d)
        "time embedding (mean over days)": emb["time_embedding"].mean("time").values,  # (site, d)
    }
    ok = np.isfinite(y)
    folds = KFold(n_splits=args.folds, shuffle=True, random_state=0)
    scores = {}
    for name, x in features.items():
        forest = RandomForestRegressor(n_estimators=args.trees, random_state=0, n_jobs=1)
        predicted = cross_val_predict(forest, x[ok], y[ok], cv=folds)
        scores[name] = r2(y[ok], predicted)
        print(f"{name:34s} R2 = {scores[name]:.3f}  ({x.shape[1]} features, {int(ok.sum())} sites)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(scores, handle, indent=2)
    return scores


if __name__ == "__main__":
    main(sys.argv[1:])
