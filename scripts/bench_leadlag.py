"""Benchmark: the HRY lead-lag contrast curve against the pip package lead-lag (2.3).

    PYTHONPATH=$PWD python scripts/bench_leadlag.py pair  [ticks] [peer_lags]
    PYTHONPATH=$PWD python scripts/bench_leadlag.py batch [pairs] [ticks] [peer_lags]

pair: two series of `ticks` (default 1,000,000) Poisson ticks each over a 6.5-hour session
(23,400 s), times stamped to the millisecond, x leading y by 0.25 s, the contrast on
-30 s .. +30 s every 1 ms (60,001 lags) with ``jaxvol.leadlag.contrast_grid`` as the README
shows it. The peer, lead-lag's Cython ``shifted_modified_hy_estimator`` (one O(n log n) pass
per lag, the dense 1 ms arrays it needs), is timed on `peer_lags` lags (default 3) and scaled
to the 60,001; its values there are compared with ours (|U| over its norms).

batch: `pairs` (default 1,000) pairs of `ticks` (default 50,000) ticks each over a session,
``jaxvol.leadlag.estimate`` in one batched call on -30 s .. +30 s every 100 ms (601 lags,
with the 200-replicate bootstrap intervals); the peer timed on one pair and scaled.
First call = compile + run; then the same call again (compiled). Prints ratios.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

SESSION = 23_400.0


def session_pair(rng, ticks, lead=0.25, rho=0.8, stamp=1e-3):
    """x, y: correlated Brownian levels, y following x by ``lead`` s, independent Poisson
    times (sorted uniform draws) stamped to ``stamp`` seconds, one tick per stamp."""
    def times():
        cells = int(SESSION / stamp)
        return np.sort(rng.choice(cells, ticks, replace=False)) * stamp

    t_x, t_y = times(), times()
    grid = np.arange(0.0, SESSION + 1.0, 0.01)           # a 10 ms Brownian grid
    w = np.cumsum(rng.normal(scale=0.1, size=grid.size))
    v = rho * w + np.sqrt(1 - rho ** 2) * np.cumsum(rng.normal(scale=0.1, size=grid.size))
    x = np.interp(t_x, grid, w)
    y = np.interp(t_y - lead, grid, v)
    return t_x, x, t_y, y


def peer(t_x, x, t_y, y, lags_ms):
    """lead-lag 2.3 at the given integer-ms lags: (seconds per lag, values)."""
    from lead_lag.lead_lag_impl import shifted_modified_hy_estimator

    ix, iy = np.round(t_x * 1e3).astype(np.int64), np.round(t_y * 1e3).astype(np.int64)
    steps = int(max(ix[-1], iy[-1])) + 1
    dense_x = np.full(steps, np.nan)
    dense_x[ix] = x
    dense_y = np.full(steps, np.nan)
    dense_y[iy] = y
    start = time.perf_counter()
    values = [shifted_modified_hy_estimator(dense_x, dense_y, ix, iy, int(k), True)
              for k in lags_ms]
    return (time.perf_counter() - start) / len(lags_ms), np.array(values)


CPU = {}


def timed(fn):
    """Wall seconds of fn() (and its process CPU seconds in CPU["last"]: on a shared machine
    the CPU time is what a quiet one would take at most, single-threaded)."""
    import jax
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    jax.block_until_ready(out)
    CPU["last"] = time.process_time() - cpu
    return time.perf_counter() - start, out


def run_pair(ticks, peer_lags):
    import jaxvol
    from jaxvol import leadlag

    jaxvol.configure()
    rng = np.random.default_rng(16)
    t_x, x, t_y, y = session_pair(rng, ticks)
    call = lambda: leadlag.contrast_grid(t_x, x, t_y, y, max_lag=30.0, resolution=0.001)
    cold, out = timed(call)
    warm, out = timed(call)
    warm_cpu = CPU["last"]
    lags = np.asarray(out.lags)
    u = np.asarray(out.contrast)
    best = lags[np.argmax(np.abs(u))]
    print(f"jaxvol contrast_grid: {ticks:,} + {ticks:,} ticks, {lags.size:,} lags: "
          f"first call {cold:.2f} s (with compile), again {warm:.2f} s ({warm_cpu:.2f} CPU s); "
          f"argmax lag {best:+.3f} s (truth +0.250), status {int(out.status)}")
    some = np.linspace(-30000, 30000, peer_lags).round().astype(int)
    some[np.argmin(np.abs(some - 250))] = 250
    per_lag, values = peer(t_x, x, t_y, y, some)
    full = per_lag * lags.size
    norm = ((np.sqrt(np.sum(np.diff(x) ** 2)) + 1e-8) * (np.sqrt(np.sum(np.diff(y) ** 2)) + 1e-8))
    ours = np.abs(u[some + 30000]) / norm
    rel = np.abs(ours - values) / values
    print(f"lead-lag 2.3: {per_lag:.2f} s per lag ({peer_lags} lags timed) -> "
          f"{full:,.0f} s for the curve; ratio {full / warm:,.0f}x (compiled), "
          f"{full / cold:,.0f}x (first call)")
    print(f"  |U| agreement at lags {some.tolist()} ms: relative differences "
          f"{np.array2string(rel, precision=2)} (the package drops the x interval before "
          f"y's first tick at positive lags, see tests/test_leadlag_contrast.py)")


def run_batch(pairs, ticks, peer_lags):
    import jaxvol
    from jaxvol import leadlag

    jaxvol.configure()
    rng = np.random.default_rng(17)
    one = [session_pair(rng, ticks) for _ in range(min(pairs, 20))]
    data = [one[k % len(one)] for k in range(pairs)]   # 20 distinct pairs, repeated
    t_x, x, t_y, y = (np.stack([d[k] for d in data]) for k in range(4))
    call = lambda: leadlag.estimate(t_x, x, t_y, y, max_lag=30.0, resolution=0.1)
    cold, out = timed(call)
    warm, out = timed(call)
    warm_cpu = CPU["last"]
    lag = np.asarray(out.lag)
    print(f"jaxvol estimate: {pairs:,} pairs x {ticks:,} ticks, 601 lags, 200 bootstrap "
          f"replicates: first call {cold:.2f} s, again {warm:.2f} s ({warm_cpu:.1f} CPU s) "
          f"({warm / pairs * 1e3:.1f} ms per pair); lags within 0.1 s of +0.25: "
          f"{np.mean(np.abs(lag - 0.25) <= 0.1 + 1e-9):.0%}, status OK "
          f"{np.mean(np.asarray(out.status) == 0):.0%}")
    some = np.linspace(-300, 300, peer_lags).round().astype(int) * 100
    per_lag, _ = peer(*data[0], some)
    full = per_lag * 601 * pairs
    print(f"lead-lag 2.3: {per_lag * 1e3:.1f} ms per lag per pair -> {full:,.0f} s for "
          f"{pairs:,} curves; ratio {full / warm:,.0f}x (compiled), {full / cold:,.0f}x "
          f"(first call)")


def main(argv):
    if not argv or argv[0] not in ("pair", "batch"):
        print(__doc__)
        return 2
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    args = [int(a) for a in argv[1:]]
    if argv[0] == "pair":
        run_pair(*(args + [1_000_000, 3][len(args):]))
    else:
        run_batch(*(args + [1_000, 50_000, 3][len(args):]))
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
