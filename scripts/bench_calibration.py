"""Benchmark: batched SVI calibration (jaxvol.svi.fit) against a loop of scipy least_squares.

Same synthetic market for both: N slices x 50 strikes of raw-SVI total variance with quote noise,
the same residuals (model minus market total variance), the same weights (1/spread, spread
growing in the wings), the same box bounds (b >= 0, |rho| < 1, sigma > 0) and the same start
points (jaxvol's quasi-explicit guess, handed to scipy precomputed and untimed: generous to
scipy). scipy gets the analytic Jacobian and its default tolerances (ftol = xtol = gtol = 1e-8),
jaxvol the same three tolerances (BENCH_CONFIG); a slice counts as converged when scipy's
status > 0 / jaxvol's status is CONVERGED. The scipy loop can be timed on a random
subset (--scipy-slices) and extrapolated per slice, which the output says. With
--cpu-devices 2 the jaxvol batch is split over two host CPU devices (one per core) with
jax.shard_map; the scipy loop always runs on one core.

Usage: python scripts/bench_calibration.py [--slices 10000] [--scipy-slices 1000]
       [--cpu-devices 1]
"""

from __future__ import annotations

import argparse
import time

import sys

import jax
import numpy as np

if __name__ == "__main__":  # host devices must be set before JAX starts its backend
    _devices = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--cpu-devices=")),
                    None)
    from jaxvol import configure
    configure(num_cpu_devices=_devices)
jax.config.update("jax_enable_x64", True)

import scipy.optimize  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from jaxvol.calibrate import FitStatus, LMConfig  # noqa: E402
from jaxvol.smile import svi  # noqa: E402

STRIKES = 50
NOISE = 1e-4  # total-variance noise at the money (spread-scaled below)
BENCH_CONFIG = LMConfig(max_iterations=60, ftol=1e-8, xtol=1e-8, gtol=1e-8)  # scipy's defaults


def synthetic_market(slices: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    expiry = rng.uniform(0.05, 2.0, slices)
    params = np.stack([
        rng.uniform(0.002, 0.03, slices) * expiry / expiry.mean(),  # a
        rng.uniform(0.03, 0.3, slices) * np.sqrt(expiry),  # b
        rng.uniform(-0.9, 0.2, slices),  # rho
        rng.uniform(-0.2, 0.2, slices) * np.sqrt(expiry),  # m
        rng.uniform(0.05, 0.5, slices) * np.sqrt(expiry),  # sigma
    ], axis=1)
    params[:, 0] = np.maximum(params[:, 0], -params[:, 1] * params[:, 4] * np.sqrt(
        1 - params[:, 2] ** 2) + 1e-3)  # keep the minimum variance positive
    k = np.linspace(-1.5, 0.8, STRIKES)[None, :] * np.sqrt(expiry)[:, None]
    clean = np.asarray(svi.total_variance(k, *[params[:, i:i + 1] for i in range(5)]))
    spread = NOISE * (1.0 + 4.0 * (k / np.sqrt(expiry)[:, None]) ** 2)
    noisy = clean + spread * rng.standard_normal(clean.shape)
    return k, noisy, 1.0 / spread


def scipy_fit(k, w, weights, start):
    def residuals(p):
        a, b, rho, m, sigma = p
        x = k - m
        return weights * (a + b * (rho * x + np.sqrt(x * x + sigma * sigma)) - w)

    def jacobian(p):
        a, b, rho, m, sigma = p
        x = k - m
        root = np.sqrt(x * x + sigma * sigma)
        columns = [np.ones_like(k), rho * x + root, b * x, -b * (rho + x / root),
                   b * sigma / root]
        return weights[:, None] * np.stack(columns, axis=1)

    lower = [-np.inf, 0.0, -1.0, -np.inf, 0.0]
    upper = [np.inf, np.inf, 1.0, np.inf, np.inf]
    start = np.clip(start, np.nextafter(lower, 1), np.nextafter(upper, -1))
    result = scipy.optimize.least_squares(residuals, start, jac=jacobian, bounds=(lower, upper),
                                          method="trf")
    rmse = np.sqrt(np.mean((result.fun / weights) ** 2))
    return result.x, result.status > 0, rmse


def time_jaxvol(k, w, weights, repeats=3, no_arbitrage=None):
    devices = jax.devices()
    options = {} if no_arbitrage is None else {"no_arbitrage": no_arbitrage}
    if len(devices) == 1:
        fit = lambda: svi.fit(k, w, weights=weights, config=BENCH_CONFIG, **options)  # noqa
    else:
        mesh = Mesh(np.array(devices), ("lanes",))
        lanes = PartitionSpec("lanes")
        sharded = jax.jit(jax.shard_map(
            lambda k, w, weights: svi.fit(k, w, weights=weights, config=BENCH_CONFIG,
                                          **options),
            mesh=mesh, in_specs=lanes, out_specs=lanes, check_vma=False))
        inputs = [jax.device_put(a, NamedSharding(mesh, lanes)) for a in (k, w, weights)]
        fit = lambda: sharded(*inputs)  # noqa: E731
    start = time.perf_counter()
    jax.block_until_ready(fit())
    first = time.perf_counter() - start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fit())
        best = min(best, time.perf_counter() - start)
    return result, first, best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10_000)
    parser.add_argument("--scipy-slices", type=int, default=1_000,
                        help="slices the scipy loop actually fits (random subset)")
    parser.add_argument("--skip-scipy", action="store_true")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="host CPU devices the jaxvol batch is split over (write "
                             "--cpu-devices=N); slices must divide evenly")
    parser.add_argument("--no-arbitrage", default=None, choices=("off", "repair", "penalty"),
                        help="svi.fit's no_arbitrage mode (default: svi.fit's default)")
    args = parser.parse_args()

    k, w, weights = synthetic_market(args.slices)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
          f"{args.slices} slices x {STRIKES} strikes, float64")
    result, first, warm = time_jaxvol(k, w, weights, no_arbitrage=args.no_arbitrage)
    converged = np.asarray(result.status) == FitStatus.CONVERGED
    codes, counts = np.unique(np.asarray(result.status), return_counts=True)
    print("statuses: " + ", ".join(f"{FitStatus(int(c)).name} {n}" for c, n in zip(codes, counts)))
    rmse = np.asarray(result.rmse)
    print(f"jaxvol svi.fit: first call {first:.2f} s (incl. compile), warm {warm:.3f} s "
          f"= {args.slices / warm:,.0f} slices/s; median rmse {np.median(rmse):.3e}; "
          f"converged {converged.mean():.2%}; max iterations {int(np.max(result.iterations))}")
    if args.skip_scipy:
        return

    subset = np.random.default_rng(1).choice(args.slices, min(args.scipy_slices, args.slices),
                                             replace=False)
    starts = np.asarray(svi.initial_guess(k[subset], w[subset], weights=weights[subset]))
    scipy_rmse, scipy_ok = [], []
    start = time.perf_counter()
    for row, lane in enumerate(subset):
        _, ok, lane_rmse = scipy_fit(k[lane], w[lane], weights[lane], starts[row])
        scipy_ok.append(ok)
        scipy_rmse.append(lane_rmse)
    elapsed = time.perf_counter() - start
    per_slice = elapsed / subset.size
    extrapolated = per_slice * args.slices
    note = "" if subset.size == args.slices else (
        f" (timed on {subset.size} random slices, extrapolated per slice)")
    print(f"scipy least_squares loop: {per_slice * 1e3:.2f} ms/slice -> {extrapolated:.1f} s "
          f"for {args.slices}{note}; median rmse {np.median(scipy_rmse):.3e}; converged "
          f"{np.mean(scipy_ok):.2%}")
    print(f"same subset, jaxvol: median rmse {np.median(rmse[subset]):.3e}, converged "
          f"{converged[subset].mean():.2%}")
    print(f"throughput ratio jaxvol / scipy: {extrapolated / warm:.1f}x")


if __name__ == "__main__":
    main()
