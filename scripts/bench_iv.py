"""Implied-vol throughput: jaxvol vs py_vollib_vectorized (Let's Be Rational) vs QuantLib.

1e6 mixed calls and puts (forward 100, strikes lognormal around it, expiries 1 week to 3 years,
vols 5%-100%), jitted, steady state; compile time reported separately. Run:

    python scripts/bench_iv.py [--n 1000000] [--repeat 5] [--skip-peers]

On a GPU machine the same script measures float64 and float32 throughput on the device.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def board(n: int, seed: int = 0):
    """1e6 mixed calls/puts: strikes lognormal (30%) around F=100, T in [1w, 3y], vol 5-100%."""
    rng = np.random.default_rng(seed)
    forward = np.full(n, 100.0)
    strike = 100.0 * np.exp(rng.normal(0.0, 0.3, n))
    expiry = rng.uniform(7 / 365, 3.0, n)
    vol = rng.uniform(0.05, 1.0, n)
    is_call = rng.random(n) < 0.5
    return forward, strike, expiry, vol, is_call


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quantlib-sample", type=int, default=50_000)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--cpu-devices", type=int, default=os.cpu_count(),
                        help="host CPU devices to shard over (one per core)")
    args = parser.parse_args()

    import jax

    from jaxvol import configure

    configure(num_cpu_devices=args.cpu_devices)
    import jaxvol
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    forward, strike, expiry, vol, is_call = board(args.n)
    price = np.asarray(jax.jit(jaxvol.black_price)(forward, strike, expiry, vol, is_call))
    device = jax.devices()[0]
    print(f"# {args.n:,} options, JAX {jax.__version__}, {device.platform} ({device.device_kind}), "
          f"{platform.machine()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    results = {}
    mesh = Mesh(np.array(jax.devices()), ("lanes",))
    sharding = NamedSharding(mesh, P("lanes"))
    print(f"# sharded over {len(jax.devices())} device(s) with shard_map (one kernel per device)")

    def solve_local(p, f, k, t, c):
        return jaxvol.implied_vol(p, f, k, t, c)

    for name, dtype in (("jaxvol float64", np.float64), ("jaxvol float32", np.float32)):
        inputs = [jax.device_put(a.astype(dtype), sharding) for a in (price, forward, strike, expiry)]
        flags = jax.device_put(is_call, sharding)
        solve = jax.jit(jax.shard_map(solve_local, mesh=mesh, in_specs=P("lanes"),
                                      out_specs=P("lanes")))
        start = time.perf_counter()
        out = jax.block_until_ready(solve(*inputs, flags))
        compile_s = time.perf_counter() - start
        run_s = best_of(lambda: jax.block_until_ready(solve(*inputs, flags)), args.repeat)
        ok = np.asarray(out.status) == 0
        err = np.abs(np.asarray(out.vol, dtype=float)[ok] / vol[ok] - 1)
        results[name] = args.n / run_s
        print(f"{name}: {args.n / run_s / 1e6:8.3f} M/s  (steady {run_s * 1e3:.1f} ms, compile+first "
              f"{compile_s:.2f} s, OK {ok.mean():.4%}, median rel err {np.median(err):.1e}, "
              f"max {err.max():.1e})")
    if not args.skip_peers:
        from py_vollib_vectorized import vectorized_implied_volatility_black

        flag = np.where(is_call, "c", "p")

        def lbr():
            return vectorized_implied_volatility_black(price, forward, strike, 0.0, expiry, flag,
                                                       return_as="numpy", on_error="ignore")

        lbr()  # numba compilation
        run_s = best_of(lbr, max(1, args.repeat // 2))
        results["py_vollib_vectorized"] = args.n / run_s
        print(f"py_vollib_vectorized: {args.n / run_s / 1e6:8.3f} M/s (steady {run_s * 1e3:.1f} ms)")

        import QuantLib as ql

        m = min(args.quantlib_sample, args.n)
        std_guess = 0.3

        def quantlib():
            for i in range(m):
                opt = ql.Option.Call if is_call[i] else ql.Option.Put
                try:
                    ql.blackFormulaImpliedStdDev(opt, strike[i], forward[i], price[i], 1.0, 0.0,
                                                 std_guess, 1e-12, 100)
                except RuntimeError:
                    pass

        run_s = best_of(quantlib, 1) * args.n / m
        results["QuantLib loop"] = args.n / run_s
        print(f"QuantLib blackFormulaImpliedStdDev loop: {args.n / run_s / 1e6:8.3f} M/s "
              f"(timed on {m:,}, scaled)")
        base = results["jaxvol float64"]
        print(f"ratio jaxvol float64 / py_vollib_vectorized: {base / results['py_vollib_vectorized']:.2f}x")
        print(f"ratio jaxvol float64 / QuantLib loop: {base / results['QuantLib loop']:.1f}x")
    print(f"# load average at the end {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
