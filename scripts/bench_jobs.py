"""Benchmark of the nightly job: wall time per stage and peak memory.

  .venv/bin/python scripts/bench_jobs.py default  OUT      # the embedded default job
  .venv/bin/python scripts/bench_jobs.py warm     OUT PREV # default market one day later,
                                                           # cold and warm-started from PREV
  .venv/bin/python scripts/bench_jobs.py large    OUT [N]  # N (20,000) underlyings, no SPX

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
    else:
        raise SystemExit(__doc__)
    with open(f"{out}-bench.json", "w") as handle:
        json.dump(results, handle, indent=2, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
