"""Benchmark of the nightly job: wall time per stage and peak memory.

  .venv/bin/python scripts/bench_jobs.py default  OUT      # the embedded default job
  .venv/bin/python scripts/bench_jobs.py warm     OUT PREV # default market one day later,
                                                           # cold and warm-started from PREV
  .venv/bin/python scripts/bench_jobs.py large    OUT [N]  # N (20,000) underlyings, no SPX
  .venv/bin/python scripts/bench_jobs.py dask     OUT [W]  # default job in-process, then on a
                                                           # LocalCluster of W (2) workers
  .venv/bin/python scripts/bench_jobs.py dask-large OUT [N] [W]  # N (20,000) underlyings on
                                                           # a LocalCluster of W (2) workers

``dask`` prints the scaling efficiency (in-process wall / (W x cluster wall)), checks that the
cluster's tables equal the in-process ones (pandas ``equals``: dtypes, float64 bit for bit) and
splits the workers' idle time, from Dask's task stream (each task's compute start and stop on
its worker):

- ``dispatch_gap_per_task_seconds``: the per-task overhead proper, a worker's gap between the
  end of one chunk task and the start of its next (the result going back, the scheduler
  assigning the next task); the first task of each worker after the fan-out counts from the
  end of the first chunk (when the client submits the rest);
- ``first_chunk_alone_seconds``: the first pending chunk runs alone by design (it fills the
  compilation cache whole before other workers read it), so W - 1 workers wait that long;
- ``tail_idle_seconds``: workers done while another still runs its last chunk (imbalance);
- ``before_first_task_seconds`` (planning, submission) and ``merge_seconds`` (merge + report,
  on the client);
- ``idle_per_task_seconds``: all of the above together, per task (every worker-second of
  cluster wall not inside a chunk task, divided by the tasks).

Run it twice: the first run fills the persistent compilation cache, the second gives the
warm-cache figures. The ``dask*`` modes report each worker's peak resident memory
(``client.run`` of getrusage), check rows in = rows out (every input ``row_id`` exactly once in
rows.parquet) and need ``jaxvol[dask]``. The client's peak RSS printed after a cluster run is
the bench process's (in ``dask`` mode it includes the in-process run before it).

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
    """This process's peak RSS: ``VmHWM`` of /proc/self/status. Not getrusage's ``ru_maxrss``:
    Linux keeps that across fork + exec, so a worker spawned by a client already holding 3 GiB
    (the in-process run of ``dask`` mode) reports the client's size, not its own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _idle_breakdown(stream, workers: int, t0: float, t_end: float, merge_seconds: float) -> dict:
    """Worker-seconds of the cluster run outside chunk tasks, by cause (see the docstring)."""
    spans = {}  # worker -> [(start, stop)] of its chunk tasks' compute
    for record in stream:
        if not str(record.get("key", "")).startswith("jaxvol-chunk-"):
            continue
        for part in record.get("startstops", ()):
            if part.get("action") == "compute":
                spans.setdefault(record["worker"], []).append((part["start"], part["stop"]))
    if not spans:
        return {}
    first_start, first_stop = min(s for ss in spans.values() for s in ss)
    last_stop = max(stop for ss in spans.values() for _, stop in ss)
    gaps, tail = [], 0.0
    for worker, ss in spans.items():
        ss.sort()
        previous = first_stop
        for start, stop in ss:
            if (start, stop) == (first_start, first_stop):
                continue
            gaps.append(max(start - previous, 0.0))
            previous = stop
        tail += last_stop - previous
    idle_workers = workers - len(spans)  # never got a task
    tasks = sum(len(ss) for ss in spans.values())
    busy = sum(stop - start for ss in spans.values() for start, stop in ss)
    wall = t_end - t0
    return {"tasks_in_stream": tasks,
            "before_first_task_seconds": first_start - t0,
            "first_chunk_alone_seconds": first_stop - first_start,
            "dispatch_gap_per_task_seconds": sum(gaps) / max(len(gaps), 1),
            "dispatch_gap_max_seconds": max(gaps, default=0.0),
            "tail_idle_seconds": tail,
            "after_last_task_seconds": t_end - last_stop,
            "merge_seconds": merge_seconds,
            "workers_without_a_task": idle_workers,
            "busy_share": busy / (workers * wall),
            "idle_per_task_seconds": (workers * wall - busy) / max(tasks, 1)}


def _run_cluster(config, out, workers: int) -> dict:
    from distributed import Client, get_task_stream

    from jaxvol.jobs.cluster import start_local_cluster
    t0 = time.perf_counter()
    with start_local_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        startup = time.perf_counter() - t0
        print(f"LocalCluster of {workers} workers up in {startup:.1f} s; dashboard "
              f"{client.dashboard_link}")
        with get_task_stream(client) as stream:
            wall_t0 = time.time()
            summary = _run(config, out, client=client)
            wall_end = time.time()
        peaks = client.run(_worker_peak_rss_mib)
    info = summary["cluster"]
    tasks = [t for t in info["tasks"] if t["status"] == "computed"]
    merge_seconds = summary["timings"].get("merge", 0.0) + summary["timings"].get("report", 0.0)
    summary["bench"] = {
        "workers": workers, "startup_seconds": startup, "tasks": len(tasks),
        "task_seconds": sum(t["seconds"] for t in tasks),
        **_idle_breakdown(stream.data, workers, wall_t0, wall_end, merge_seconds),
        "programs_compiled_on_workers": sum(t["compiled"] for t in tasks),
        "programs_loaded_on_workers": sum(t["loaded"] for t in tasks),
        "worker_peak_rss_mib": {str(k): v for k, v in peaks.items()}}
    summary["bench"].update(_rows_in_out(config, out, tasks, summary))
    for name, value in summary["bench"].items():
        print(f"  {name}: {value:.2f}" if isinstance(value, float) else f"  {name}: {value}")
    return summary


def _rows_in_out(config, out, tasks, summary) -> dict:
    """Rows in (the synthetic market's, and as the chunk tasks counted them) against rows out
    (rows.parquet), and every input ``row_id`` exactly once."""
    import numpy as np
    import pyarrow.parquet as pq
    m = config["market"]
    rows_in = m["underlyings"] * m["expiries"] * m["strikes"] * 2
    ids = pq.read_table(f"{out}/rows.parquet", columns=["row_id"])["row_id"].to_numpy()
    synthetic = ids[ids < rows_in]
    once = bool(len(synthetic) == rows_in and (np.sort(synthetic) == np.arange(rows_in)).all())
    return {"rows_in_synthetic": rows_in, "rows_in_tasks": sum(t.get("rows", 0) for t in tasks),
            "rows_out": int(summary["rows"]), "rows_parquet": len(ids),
            "every_synthetic_row_id_once": once}


TABLES = ("rows", "slices", "underlyings", "indices", "arbitrage")


def _compare_tables(left: str, right: str) -> dict:
    """pandas ``equals`` of every output table of two runs (dtypes, float64 bit for bit)."""
    import os

    import pandas as pd
    result = {}
    for name in TABLES:
        paths = [f"{folder}/{name}.parquet" for folder in (left, right)]
        present = [os.path.exists(p) for p in paths]
        if not any(present):
            continue
        if not all(present):
            result[name] = False
            continue
        a, b = (pd.read_parquet(p) for p in paths)
        result[name] = bool(a.equals(b))
        if not result[name]:
            try:
                pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
            except AssertionError as error:
                print(f"{name}: differs: {str(error)[:400]}")
        del a, b
    return result


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
        same = _compare_tables(out + "-in-process", out + "-cluster")
        results["scaling"] = {"speed_up": single / spread, "efficiency": efficiency,
                              "tables_equal": same}
        bench = results["cluster"]["bench"]
        print(f"in-process {single:.1f} s, LocalCluster({workers}) {spread:.1f} s: speed-up "
              f"{single / spread:.2f}x, scaling efficiency {efficiency:.0%}; per-task dispatch "
              f"gap {bench.get('dispatch_gap_per_task_seconds', float('nan')):.2f} s, first "
              f"chunk alone {bench.get('first_chunk_alone_seconds', float('nan')):.1f} s, idle "
              f"per task (all causes) {bench.get('idle_per_task_seconds', float('nan')):.2f} s")
        print("tables equal to the in-process run (pandas equals): " + ", ".join(
            f"{name} {'yes' if ok else 'NO'}" for name, ok in same.items()))
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
    problems = [name for name, ok in results.get("scaling", {}).get("tables_equal", {}).items()
                if not ok]
    if "cluster" in results and not results["cluster"]["bench"].get(
            "every_synthetic_row_id_once", True):
        problems.append("rows in != rows out")
    if problems:
        raise SystemExit(f"FAILED: {', '.join(problems)}")


if __name__ == "__main__":
    main(sys.argv[1:])
