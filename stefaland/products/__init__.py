"""Readers for the pretraining products (paper Table C1) in the formats their providers publish.

Each module is an intake driver (registered in pyproject.toml) that opens one kind of product
lazily, as dask-backed xarray (or, for polygon products, a GeoDataFrame), so that ``data build``
extracts sites from the files users download, with no conversion step.
"""
