"""Benchmark of the nightly job: wall time per stage and peak memory.

  .venv/bin/python scripts/bench_jobs.py default  OUT      # the embedded default job
  .venv/bin/python scripts/bench_jobs.py warm     OUT PREV # default market one day later,
                                                           # cold and warm-started from PREV
  .venv/bin/python scripts/bench_jobs.py large    OUT [N]  # N (20,000) underlyings, no SPX
  .venv/bin/python scripts/bench_jobs.py dask     OUT [W]  # default job in-process, then on a
                                                           # LocalCluster of W (2) workers
  .venv/bin/python scripts/bench_jobs.py dask-large OUT [N] [W]  # N (20,000) underlyings on
                                                           # a LocalCluster of W (2) workers

``dask`` prints the scaling efficiency (in-process wall / (W x cluster wall)) and the per-task
overhead: cluster wall time not spent inside chunk tasks, per task and worker (scheduling,
transfers of the small summaries, the merge's share is reported apart). Run it twice: the first
run fills the persistent compilation cache, the second gives the warm-cache figures. The
``dask*`` modes report each worker's peak resident memory (``client.run`` of getrusage) and
need ``jaxvol[dask]``.

Peak memory is the process's maximum resident set size (resource.getrusage); each mode should
run in a fresh process so the figure is that mode's alone. Extra ``section.key=value`` arguments
override the config (e.g. heston.enabled=false).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import jaxvol
from jaxvol.jobs import load_config, merge_overrides, run_nightly
from jaxvol.jobs.merge import format_summary


def _overrides(items):
    import tomllib
    return {k: tomllib.loads(f"v = {v}")["v"] for k, v in (a.split("=", 1) for a in items)}


def _run(config, out, **kwargs) -> dict:
    started = time.perf_counter()
    summary = run_nightly(config, out=out, fresh=True, **kwargs)
    summary["wall_seconds"] = time.perf_counter() - started
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(format_summary(summary))
    print(f"wall {summary['wall_seconds']:.1f} s, peak RSS {summary['peak_rss_mib']:.0f} MiB")
    return summary


def _worker_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_cluster(config, out, workers: int) -> dict:
    from distributed import Client

    from jaxvol.jobs.cluster import start_local_cluster
    t0 = time.perf_counter()
    with start_local_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        startup = time.perf_counter() - t0
        print(f"LocalCluster of {workers} workers up in {startup:.1f} s; dashboard "
              f"{client.dashboard_link}")
        summary = _run(config, out, client=client)
        peaks = client.run(_worker_peak_rss_mib)
    info = summary["cluster"]
    tasks = [t for t in info["tasks"] if t["status"] == "computed"]
    busy: dict = {}
    for task in tasks:
        busy[task["worker"]] = busy.get(task["worker"], 0.0) + task["seconds"]
    merge_seconds = summary["timings"].get("merge", 0.0) + summary["timings"].get("report", 0.0)
    chunk_wall = summary["wall_seconds"] - merge_seconds
    idle = sum(chunk_wall - seconds for seconds in busy.values()) + chunk_wall * (
        workers - len(busy))
    summary["bench"] = {
        "workers": workers, "startup_seconds": startup, "tasks": len(tasks),
        "task_seconds": sum(t["seconds"] for t in tasks), "merge_seconds": merge_seconds,
        "overhead_per_task_seconds": idle / max(len(tasks), 1),
        "programs_compiled_on_workers": sum(t["compiled"] for t in tasks),
        "worker_peak_rss_mib": {str(k): v for k, v in peaks.items()}}
    for name, value in summary["bench"].items():
        print(f"  {name}: {value}")
    return summary


def main(argv) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    jaxvol.configure()
    mode, out = argv[0], argv[1]
    config = load_config(None)
    if mode == "default":
        results = {"default": _run(merge_overrides(config, _overrides(argv[2:])), out)}
    elif mode == "warm":
        config = merge_overrides(config, {"market.day": 1, **_overrides(argv[3:])})
        results = {"cold": _run(config, out + "-cold"),
                   "warm": _run(config, out + "-warm", warm_start=argv[2])}
        for stage in ("svi", "sabr", "heston"):
            cold, warm = results["cold"]["timings"][stage], results["warm"]["timings"][stage]
            print(f"warm-start speed-up of {stage}: {cold / warm:.2f}x ({cold:.1f} s -> "
                  f"{warm:.1f} s)")
    elif mode == "large":
        count = int(argv[2]) if len(argv) > 2 else 20000
        config = merge_overrides(config, {"market.underlyings": count,
                                          "market.include_spx": False, **_overrides(argv[3:])})
        results = {"large": _run(config, out)}
    elif mode == "dask":
        workers = int(argv[2]) if len(argv) > 2 else 2
        config = merge_overrides(config, _overrides(argv[3:]))
        results = {"in_process": _run(config, out + "-in-process"),
                   "cluster": _run_cluster(config, out + "-cluster", workers)}
        single, spread = (results[k]["wall_seconds"] for k in ("in_process", "cluster"))
        efficiency = single / (workers * spread)
        results["scaling"] = {"speed_up": single / spread, "efficiency": efficiency}
        print(f"in-process {single:.1f} s, LocalCluster({workers}) {spread:.1f} s: speed-up "
              f"{single / spread:.2f}x, scaling efficiency {efficiency:.0%}; per-task overhead "
              f"{results['cluster']['bench']['overhead_per_task_seconds']:.2f} s")
    elif mode == "dask-large":
        count = int(argv[2]) if len(argv) > 2 else 20000
        workers = int(argv[3]) if len(argv) > 3 else 2
        config = merge_overrides(config, {"market.underlyings": count,
                                          "market.include_spx": False, **_overrides(argv[4:])})
        results = {"cluster": _run_cluster(config, out, workers)}
    else:
        raise SystemExit(__doc__)
    with open(f"{out}-bench.json", "w") as handle:
        json.dump(results, handle, indent=2, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
