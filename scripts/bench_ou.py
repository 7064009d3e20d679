"""Benchmark: jaxvol.ou.fit on [series, ticks] irregular OU batches (exact likelihood and the
noise-aware Kalman fit) against a loop of statsmodels fits of the same series (AutoReg AR(1)
and SARIMAX(1,0,0) with measurement_error=True), timed on a subset and scaled.

    PYTHONPATH=$PWD python scripts/bench_ou.py [--series 10000] [--ticks 2000] [--peer 20]

jaxvol is called the way the README shows (ou.fit on arrays); the first call includes
compilation and is reported separately; the timed figure is the median of --repeats calls.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=2_000)
    parser.add_argument("--peer", type=int, default=20, help="series timed in statsmodels")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import jax
    import jaxvol
    from jaxvol import ou

    jaxvol.configure()
    rng = np.random.default_rng(0)
    gaps = rng.exponential(0.1, (args.series, args.ticks))
    gaps[:, 0] = 0.0
    times = np.cumsum(gaps, axis=1)
    lam, s2 = math.log(2) / 2.0, 0.04
    latent = np.asarray(ou.simulate(jax.random.key(0), times, lam=lam, mu=0.0,
                                    eta=math.sqrt(2 * lam * s2)))
    noise = 0.09 * s2
    values = latent + math.sqrt(noise) * rng.standard_normal(latent.shape)
    print(f"load average {os.getloadavg()}; {args.series} series x {args.ticks} ticks; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")

    results = {}
    for label, kwargs in (("exact", {}), ("kalman", {"noise_variance": noise})):
        t0 = time.perf_counter()
        ou.fit(times, values, **kwargs).lam.block_until_ready()
        first = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ou.fit(times, values, **kwargs).lam.block_until_ready()
            runs.append(time.perf_counter() - t0)
        results[label] = float(np.median(runs))
        print(f"jaxvol {label:6s}: first call {first:8.2f} s, then {results[label]:8.2f} s "
              f"({results[label] / args.series * 1e3:.3f} ms/series)")

    from statsmodels.tsa.ar_model import AutoReg
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    warnings.simplefilter("ignore")
    peers = {}
    t0 = time.perf_counter()
    for i in range(args.peer):
        AutoReg(values[i], lags=1, trend="c").fit()
    peers["exact"] = (time.perf_counter() - t0) / args.peer
    t0 = time.perf_counter()
    for i in range(args.peer):
        SARIMAX(values[i], order=(1, 0, 0), trend="c", measurement_error=True).fit(disp=False)
    peers["kalman"] = (time.perf_counter() - t0) / args.peer
    for label, peer_name in (("exact", "AutoReg AR(1)"), ("kalman", "SARIMAX(1,0,0)+meas.err")):
        scaled = peers[label] * args.series
        print(f"statsmodels {peer_name:24s}: {peers[label] * 1e3:8.2f} ms/series, scaled to "
              f"{args.series}: {scaled:9.1f} s; jaxvol {label} is {scaled / results[label]:7.1f}x")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
