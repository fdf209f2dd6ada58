"""The global store's daily products at their true size, built from object storage on 1 and 2 workers.

What ``stefaland submit build`` runs on Kubernetes, measured here on local worker processes: the
daily products that catalog/global.yaml reads (MSWX Tmax, Tmin, SWd, RelHum and MSWEP
precipitation) laid out as their providers publish them (docs/GRIDDED.md, "The daily products'
true layout": one NetCDF-4 file per variable and day, 0.1° global grid of 1800 × 3600 cells,
float32, deflate level 4 with shuffle, the whole map one chunk), for the paper's 4,229 sites
(``synth.products.pretraining_sites``), served by the S3 test server (SeaweedFS on loopback)
through a counting proxy (tests/_s3_faults.py), and built with ``data build``'s own code
(``build_store(..., scheduler=<a LocalCluster's address>)``) into a store on the same server.

Per worker count it measures, in the same run:

* bytes read per file against the file's size (what the proxy served for each object);
* seconds per file per worker (wall time × workers / files) and site-days per second;
* peak resident memory per worker process;
* the raw-read bound: the same objects fetched whole on the same workers, nothing decoded; and
  the layout's bound: fetched and every map inflated, nothing extracted.

and extrapolates to 40 years (14,610 days × 5 files) on N workers from the per-file time, with
two bounds: the raw-read rate measured here, and a stated object-storage bandwidth per worker
(``--bandwidth``, MB/s). One year is 1,825 files and ~12 GB here: the full run needs a machine with
room for that; ``--days`` / ``--quick`` measure fewer days with the same files and sites.

    .venv/bin/python benchmarks/bench_global_build.py                 # one year, 1 and 2 workers
    .venv/bin/python benchmarks/bench_global_build.py --quick         # 4 days: a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_global_build.py --days 30 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

MSWX = ("Tmax", "Tmin", "SWd", "RelHum")
RESOLUTION = 0.1
FULL_DAYS = 14_610  # 1980-2019
SITES = 4229


def field(variable: str, day: pd.Timestamp, lat: np.ndarray, lon: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A day's map with the smoothness of real weather and its noise, so deflate does what it does
    on the real files: a large-scale pattern plus a small cell-to-cell part, kept to the precision
    the products publish (two decimals)."""
    phase = 2 * np.pi * day.day_of_year / 365.25
    base = {"Tmax": 30 - 0.45 * np.abs(lat), "Tmin": 18 - 0.45 * np.abs(lat), "SWd": 300 * np.cos(np.deg2rad(lat)),
            "RelHum": 70 + 10 * np.sin(np.deg2rad(3 * lat)), "precipitation": np.zeros_like(lat)}[variable]
    wave = 4 * np.sin(np.deg2rad(2 * lon) + phase) * np.cos(np.deg2rad(3 * lat) - phase)
    values = base + wave + rng.normal(0, 0.4, lat.shape).astype(np.float32)
    if variable == "precipitation":
        values = np.where(wave > 1.5, np.maximum(values * 3, 0), 0.0)
    return np.round(values, 2).astype(np.float32)


def write_products(root: Path, days: pd.DatetimeIndex, seed: int) -> list[Path]:
    """The day files, in their providers' folders, written by the miniatures' own writer at 0.1°."""
    from stefaland.synth.products_daily import MSWEP, mswep_path, mswx_path
    from stefaland.synth.products_daily import MSWX as ATTRS
    from stefaland.synth.products_io import DayFiles
    from stefaland.synth.products_world import Grid

    grid = Grid(RESOLUTION)
    lat, lon = grid.mesh()
    writer = DayFiles(grid)
    rng = np.random.default_rng(seed)
    files = []
    for day in days:
        for folder in MSWX:
            path = mswx_path(root, folder, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            name, attrs = ATTRS[folder]
            writer.write(path, name, attrs, field(folder, day, lat, lon, rng), day)
            files.append(path)
        path = mswep_path(root, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer.write(path, MSWEP[0], MSWEP[1], field("precipitation", day, lat, lon, rng), day)
        files.append(path)
    return files


class WorkerPeaks:
    """Peak RSS of each given process, sampled every 0.1 s in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peaks = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for i, proc in enumerate(self.procs):
            try:
                self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> WorkerPeaks:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _fetch(url: str) -> int:
    """One object, whole, as the build's reader fetches it (``fileio.filesystem(url).cat_file``)."""
    from stefaland.fileio import filesystem

    fs, path = filesystem(url)
    return len(fs.cat_file(path))


def _fetch_decode(url: str) -> int:
    """The object fetched and its map decoded (inflated), nothing extracted: the layout's own bound."""
    import io

    import h5py

    from stefaland.fileio import filesystem

    fs, path = filesystem(url)
    with h5py.File(io.BytesIO(fs.cat_file(path)), "r") as handle:
        name = next(k for k, v in handle.items() if getattr(v, "ndim", 0) == 3)
        return int(np.asarray(handle[name][...]).size)


@dataclass
class Result:
    workers: int
    build_s: float  # the whole build: catalog, sites, skeleton, extraction, shards, statistics
    extract_s: float  # of which reading the gridded sources (what grows with the days)
    raw_s: float
    decode_s: float  # fetch + inflate every map, no extraction
    files: int
    file_bytes: float  # mean size
    read_ratio: float  # bytes served per file / file size (mean)
    max_read_ratio: float
    site_days: int
    peak_rss: list[int]


def measure(workers: int, urls: list[str], sizes: dict[str, int], catalog: str, bucket: str, days: pd.DatetimeIndex,
            faults) -> Result:
    from bench_gridded_build import GRIDDED_S, old_path
    from distributed import Client, LocalCluster

    from stefaland.assemble import build_store

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        started = time.perf_counter()
        total = sum(client.gather(client.map(_fetch, urls, pure=False)))
        raw_s = time.perf_counter() - started
        assert total == sum(sizes.values())
        started = time.perf_counter()
        client.gather(client.map(_fetch_decode, urls, pure=False))
        decode_s = time.perf_counter() - started
        faults.served.clear()
        out = f"s3://{bucket}/stores/global-{workers}w.zarr"
        with WorkerPeaks(pids) as peaks, old_path(False):  # old_path(False): the build as it is, gridded reads timed
            started = time.perf_counter()
            summary = build_store(catalog, out, sources=["mswx", "mswep"], start=str(days[0].date()),
                                  end=str(days[-1].date()), quiet=True, scheduler=cluster.scheduler_address)
            build_s = time.perf_counter() - started
        extract_s = GRIDDED_S[0]
    ratios = [faults.served.get("/" + url.removeprefix("s3://"), 0) / sizes[url] for url in urls]
    return Result(workers, build_s, extract_s, raw_s, decode_s, len(urls), float(np.mean(list(sizes.values()))), float(np.mean(ratios)),
                  float(np.max(ratios)), summary.n_sites * summary.n_time, peaks.peaks)


def reads_per_file_at(n_days: int, window_bytes: int) -> dict[str, int]:
    """How often each file of a day-per-file source is read by a build of ``n_days`` days: once per
    window of sites (catalog/readers.py: ``window_bytes`` bounds a window's values)."""
    reads = {}
    for source, n_vars in (("mswx", 4), ("mswep", 1)):
        window = max(1, window_bytes // (2 * 8 * n_vars * n_days))
        reads[source] = math.ceil(SITES / window)
    return reads


def report(results: list[Result], args: argparse.Namespace, n_days: int) -> None:
    mb = 1e6
    print(f"\n{SITES} sites x {n_days} days, {results[0].files} files of {results[0].file_bytes / mb:.1f} MB "
          f"(0.1 deg, 1800 x 3600 float32, deflate 4 + shuffle, one chunk per map)")
    print("workers  build s  extract s  s/file/worker  site-days/s  read/size (max)  raw s/file/worker  vs raw  "
          "fetch+inflate s/file/worker  vs that  peak RSS/worker MB")
    for r in results:
        per_file = r.extract_s * r.workers / r.files
        raw_per_file = r.raw_s * r.workers / r.files
        decode_per_file = r.decode_s * r.workers / r.files
        print(f"{r.workers:>7}  {r.build_s:7.1f}  {r.extract_s:9.1f}  {per_file:13.3f}  "
              f"{r.site_days / r.extract_s:11.0f}  {r.read_ratio:6.2f} ({r.max_read_ratio:.2f})  "
              f"{raw_per_file:17.3f}  {raw_per_file / per_file:6.0%}  {decode_per_file:27.3f}  "
              f"{decode_per_file / per_file:7.0%}  {max(r.peak_rss) / mb:18.0f}")
    print("(s/file/worker and site-days/s from the extraction time; the rest of the build does not grow with days)")
    best = min(results, key=lambda r: r.extract_s * r.workers / r.files)
    per_file = best.extract_s * best.workers / best.files
    from stefaland.catalog.readers import GRIDDED_WINDOW_BYTES
    from stefaland.k8s.dask_manifests import BuildOptions, window_bytes

    files_40y = FULL_DAYS * 5
    n = args.target_workers
    print(f"\n40 years = {files_40y:,} files, on {n} workers, from {per_file:.3f} s/file/worker (the best of the "
          f"run); bounds: raw read as measured here, object storage at {args.bandwidth:.0f} MB/s per worker. "
          "Goal: <= 1 h.")
    client_memory = BuildOptions(catalog="", out="").client_memory
    for label, window in ((f"data build's default window ({GRIDDED_WINDOW_BYTES / 2**30:.0f} GiB)", GRIDDED_WINDOW_BYTES),
                          (f"submit build's client ({client_memory}: window {window_bytes(client_memory) / 2**30:.1f} GiB)",
                           window_bytes(client_memory))):
        reads = reads_per_file_at(FULL_DAYS, window)
        factor = (4 * reads["mswx"] + reads["mswep"]) / 5  # mean reads per file
        compute_h = files_40y * factor * per_file / n / 3600
        raw_h = files_40y * factor * best.raw_s * best.workers / best.files / n / 3600
        network_h = files_40y * factor * best.file_bytes / (n * args.bandwidth * mb) / 3600
        print(f"  {label}: MSWX files read {reads['mswx']}x, MSWEP {reads['mswep']}x -> {compute_h:.2f} h "
              f"(raw-read bound {raw_h:.2f} h, object storage {network_h:.2f} h)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365, help="days of files (from 2001-01-01) [365]")
    parser.add_argument("--quick", action="store_true", help="--days 4")
    parser.add_argument("--workers", default="1,2", help="worker processes to compare, comma-separated [1,2]")
    parser.add_argument("--bandwidth", type=float, default=100.0,
                        help="object-storage bandwidth per worker in MB/s for the network bound [100]")
    parser.add_argument("--target-workers", type=int, default=64, help="N of the 40-year estimate [64]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_days = 4 if args.quick else args.days
    days = pd.date_range("2001-01-01", periods=n_days, freq="D")

    import s3fs

    from stefaland.synth.products import SITES_FILE, pretraining_sites

    from _s3_faults import faulty_s3
    from _seaweed import seaweed_server

    work = Path(tempfile.mkdtemp(prefix="bench-global-build-"))
    try:
        started = time.perf_counter()
        root = work / "global"
        files = write_products(root, days, args.seed)
        sites = root / SITES_FILE
        sites.parent.mkdir(parents=True, exist_ok=True)
        sites.write_text(pretraining_sites(SITES, args.seed).to_csv(index=False))
        print(f"wrote {len(files)} day files in {time.perf_counter() - started:.0f} s", flush=True)
        with seaweed_server(work / "seaweed") as server, faulty_s3(server.endpoint) as (endpoint, faults):
            os.environ.update(server.env() | {"AWS_ENDPOINT_URL": endpoint})
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            bucket = "bench"
            fs.mkdir(bucket)
            local = [sites, *files]
            fs.put([str(p) for p in local], [f"{bucket}/global/{p.relative_to(root)}" for p in local])
            fs.put_file(str(REPO / "catalog" / "global.yaml"), f"{bucket}/catalogs/global.yaml")
            shutil.rmtree(root)  # the server holds its own copy
            os.environ["STEFALAND_GLOBAL_ROOT"] = f"s3://{bucket}/global"
            urls = [f"s3://{bucket}/global/{p.relative_to(root)}" for p in files]
            sizes = {u: int(fs.info(u)["size"]) for u in urls}
            results = []
            for workers in [int(w) for w in args.workers.split(",")]:
                results.append(measure(workers, urls, sizes, f"s3://{bucket}/catalogs/global.yaml", bucket, days,
                                       faults))
                print(f"{workers} worker(s): build {results[-1].build_s:.1f} s (extraction {results[-1].extract_s:.1f} s), "
                      f"raw read {results[-1].raw_s:.1f} s", flush=True)
        report(results, args, n_days)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
