"""Benchmark: jaxvol.ou.fit on [series, ticks] irregular OU batches (exact likelihood and the
noise-aware Kalman fit) against a loop of statsmodels fits of the same series (AutoReg AR(1)
and SARIMAX(1,0,0) with measurement_error=True), timed on a subset and scaled. The timed
rounds interleave jaxvol and its peer (each round: jaxvol's batch, then --peer peer fits), so
that both see the same machine load; medians over --repeats rounds.

    PYTHONPATH=$PWD python scripts/bench_ou.py [--series 10000] [--ticks 2000] [--peer 20]

jaxvol is called the way the README shows (ou.fit on arrays); the first call includes
compilation and is reported separately.
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

    from statsmodels.tsa.ar_model import AutoReg
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    warnings.simplefilter("ignore")
    fits = {"exact": {}, "kalman": {"noise_variance": noise}}
    peers = {
        "exact": ("AutoReg AR(1)", lambda x: AutoReg(x, lags=1, trend="c").fit()),
        "kalman": ("SARIMAX(1,0,0)+meas.err", lambda x: SARIMAX(
            x, order=(1, 0, 0), trend="c", measurement_error=True).fit(disp=False)),
    }
    for label, kwargs in fits.items():   # compile (first call) before the timed rounds
        t0 = time.perf_counter()
        ou.fit(times, values, **kwargs).lam.block_until_ready()
        print(f"jaxvol {label:6s}: first call (compile + run) {time.perf_counter() - t0:8.2f} s")
    # timed rounds, jaxvol and its peer interleaved so that both see the same load
    ours = {label: [] for label in fits}
    theirs = {label: [] for label in fits}
    for r in range(args.repeats):
        for label, kwargs in fits.items():
            t0 = time.perf_counter()
            ou.fit(times, values, **kwargs).lam.block_until_ready()
            ours[label].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(args.peer):
                peers[label][1](values[(r * args.peer + i) % args.series])
            theirs[label].append((time.perf_counter() - t0) / args.peer)
            print(f"round {r} {label:6s}: jaxvol {ours[label][-1]:8.2f} s, "
                  f"{peers[label][0]} {theirs[label][-1] * 1e3:8.2f} ms/series, "
                  f"load {os.getloadavg()[0]:.1f}")
    for label in fits:
        mine = float(np.median(ours[label]))
        peer = float(np.median(theirs[label]))
        scaled = peer * args.series
        print(f"{label:6s}: jaxvol {mine:8.2f} s ({mine / args.series * 1e3:.3f} ms/series); "
              f"{peers[label][0]} {peer * 1e3:.2f} ms/series, scaled to {args.series}: "
              f"{scaled:9.1f} s; jaxvol is {scaled / mine:7.1f}x")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
