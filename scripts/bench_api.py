"""The public API as a user calls it: first call (cold / cached), steady direct, under jit, peer.

For each entry point, in one run:

* first call cold: a fresh Python process with ``jaxvol.enable_compilation_cache(<empty dir>)``
  times its first call (trace + compile + run; the import is timed separately);
* first call cached: a second fresh process on the now filled cache folder;
* steady direct: best of ``--repeat`` direct calls, exactly as the README writes them,
  interleaved with the jitted call and the peer (best wall time and best process CPU time of
  each: on a shared machine the CPU time counts only what this process ran);
* steady under jit: the same with ``jax.jit(fn)`` of the user's own (for comparison);
* the peer a user would otherwise use, timed in the same run: the numpy/scipy closed form
  (``scipy.special.ndtr``, one thread), py_vollib_vectorized (Let's Be Rational, numba, one
  thread), QuantLib's AnalyticHestonEngine in a Python loop (the model and engine built once
  per parameter set, AngledContour + exp-sinh at 1e-11: the setting that agrees with mpmath to
  1e-9 on these surfaces, see scripts/bench_heston.py), and the agreement with it;
* ``import jaxvol`` on top of ``import jax`` (fresh processes, best of 3).

    python scripts/bench_api.py [--repeat 5] [--cores 1|2] [--only black_price,heston_surface]
        [--skip-first-call] [--skip-peers] [--skip-import]

``--cores 1`` pins the whole process (XLA's threads and the peers) to one core: the per-core
figures. The load average is printed at the start and the end: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

N = 1_000_000


# ----------------------------------------------------------------------------- inputs
def board(n=N, seed=0):
    """The bench_iv board: F = 100, strikes lognormal (30%), T 1 week..3 years, vol 5-100%."""
    rng = np.random.default_rng(seed)
    return (np.full(n, 100.0), 100.0 * np.exp(rng.normal(0.0, 0.3, n)),
            rng.uniform(7 / 365, 3.0, n), rng.uniform(0.05, 1.0, n), rng.random(n) < 0.5)


def heston_surface():
    """10 parameter sets x 20 expiries x 100 strikes (bench_heston's first 10 sets)."""
    rng = np.random.default_rng(7)
    sets = np.stack([rng.uniform(0.01, 0.2, 100), rng.uniform(0.5, 5, 100),
                     rng.uniform(0.01, 0.2, 100), rng.uniform(0.1, 1.0, 100),
                     rng.uniform(-0.9, 0.0, 100)], axis=1)[:10]
    days = np.round(np.geomspace(14, 5 * 365, 20)).astype(int)
    strikes = np.linspace(50.0, 150.0, 100)
    return sets, days, strikes


def _heston_kwargs(sets, spot=100.0, rate=0.02, div=0.01):
    names = ("v0", "kappa", "theta", "sigma", "rho")
    return dict(spot=spot, rate=rate, div=div,
                **{n: sets[:, i, None, None] for i, n in enumerate(names)})


def cases():
    """name -> (make() -> (fn, args, kwargs), options count)."""
    import jaxvol
    from jaxvol import heston, sabr, svi

    def black():
        f, k, t, v, c = board()
        return jaxvol.black_price, (f, k, t, v, c), {"discount": 0.99}

    def bsm():
        f, k, t, v, c = board()
        return jaxvol.bsm_price, (f, k, t, v, 0.03, 0.01, c), {}

    def greeks():
        f, k, t, v, c = board()
        return jaxvol.greeks, (f, k, t, v, c), {"discount": 0.99}

    def bachelier():
        f, k, t, v, c = board()
        return jaxvol.bachelier_price, (f, k, t, 20.0 * v, c), {}

    def implied():
        f, k, t, v, c = board()
        price = np.asarray(jaxvol.black_price(f, k, t, v, c))
        return jaxvol.implied_vol, (price, f, k, t, c), {}

    def surface():
        sets, days, strikes = heston_surface()
        expiry = (days / 365.0)[None, :, None]
        forward = 100.0 * np.exp(0.01 * expiry)
        return heston.price, (strikes, expiry), dict(
            _heston_kwargs(sets), is_call=strikes[None, None, :] >= forward)

    def flat():  # the same 20,000 options flattened: per-option expiries and parameters
        sets, days, strikes = heston_surface()
        shape = (10, 20, 100)
        expiry = np.broadcast_to((days / 365.0)[None, :, None], shape).ravel()
        kw = {n: np.broadcast_to(v, shape).ravel() if np.ndim(v) else v
              for n, v in _heston_kwargs(sets).items()}
        strike = np.broadcast_to(strikes, shape).ravel()
        return heston.price, (strike, expiry), dict(
            kw, is_call=strike >= 100.0 * np.exp(0.01 * expiry))

    def sabr_case():
        _, k, t, _, _ = board()
        return sabr.implied_vol, (100.0, k, t, 0.2, 0.5, -0.3, 0.4), {"method": "obloj"}

    def svi_case():
        _, k, _, _, _ = board()
        return svi.total_variance, (np.log(k / 100.0), 0.02, 0.1, -0.4, 0.0, 0.2), {}

    return {"black_price": (black, N), "bsm_price": (bsm, N), "greeks": (greeks, N),
            "bachelier_price": (bachelier, N), "implied_vol": (implied, N),
            "heston_surface": (surface, 20_000), "heston_flat": (flat, 20_000),
            "sabr_implied_vol": (sabr_case, N), "svi_total_variance": (svi_case, N)}


# ----------------------------------------------------------------------------- peers
def peer_black(f, k, t, v, c, discount=0.99):
    from scipy.special import ndtr

    s = v * np.sqrt(t)
    d1 = np.log(f / k) / s + 0.5 * s
    theta = np.where(c, 1.0, -1.0)
    return discount * theta * (f * ndtr(theta * d1) - k * ndtr(theta * (d1 - s)))


def peer_greeks(f, k, t, v, c, discount=0.99):
    """The nine greeks and the price in numpy/scipy (what a user would write)."""
    from scipy.special import ndtr

    s = v * np.sqrt(t)
    d1 = np.log(f / k) / s + 0.5 * s
    d2 = d1 - s
    theta = np.where(c, 1.0, -1.0)
    pdf1 = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)
    pdf2 = np.exp(-0.5 * d2 * d2) / np.sqrt(2 * np.pi)
    price = discount * theta * (f * ndtr(theta * d1) - k * ndtr(theta * d2))
    vega = discount * f * pdf1 * np.sqrt(t)
    rate = -np.log(discount) / t
    return (price, theta * discount * ndtr(theta * d1), discount * pdf1 / (f * s), vega,
            rate * price - discount * f * pdf1 * v / (2 * np.sqrt(t)), -t * price,
            -discount * pdf1 * d2 / v, vega * d1 * d2 / v,
            -theta * discount * ndtr(theta * d2), discount * pdf2 / (k * s))


def peer_bsm(f, k, t, v, rate, div, c):
    return peer_black(f * np.exp((rate - div) * t), k, t, v, c, np.exp(-rate * t))


def peer_implied(price, f, k, t, c):
    from py_vollib_vectorized import vectorized_implied_volatility_black

    return vectorized_implied_volatility_black(price, f, k, 0.0, t, np.where(c, "c", "p"),
                                               return_as="numpy", on_error="ignore")


def peer_heston(strikes, expiry, **kw):
    """QuantLib AnalyticHestonEngine loop over the surface (or its flattened form)."""
    import QuantLib as ql

    shape = np.broadcast_shapes(np.shape(strikes), np.shape(expiry),
                                *(np.shape(v) for v in kw.values()))
    b = {n: np.broadcast_to(v, shape).ravel() for n, v in kw.items()}
    strikes = np.broadcast_to(strikes, shape).ravel()
    expiry = np.broadcast_to(expiry, shape).ravel()
    today = ql.Date(21, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()

    def handle(x):
        return ql.YieldTermStructureHandle(ql.FlatForward(today, float(x), dc))

    out = np.empty(strikes.size)
    engines = {}
    for i in range(strikes.size):
        key = tuple(float(b[n][i]) for n in ("v0", "kappa", "theta", "sigma", "rho"))
        if key not in engines:  # model and engine once per parameter set, as a user would
            process = ql.HestonProcess(handle(b["rate"][i]), handle(b["div"][i]),
                                       ql.QuoteHandle(ql.SimpleQuote(float(b["spot"][i]))),
                                       *key)
            engines[key] = ql.AnalyticHestonEngine(
                ql.HestonModel(process), ql.AnalyticHestonEngine.AngledContour,
                ql.FourierIntegration.expSinh(1e-11))
        kind = ql.Option.Call if b["is_call"][i] else ql.Option.Put
        option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, float(strikes[i])),
                                  ql.EuropeanExercise(today + int(round(expiry[i] * 365))))
        option.setPricingEngine(engines[key])
        out[i] = option.NPV()
    return out.reshape(shape)


PEERS = {"black_price": ("numpy/scipy ndtr", peer_black),
         "bsm_price": ("numpy/scipy ndtr", peer_bsm),
         "greeks": ("numpy/scipy closed form", peer_greeks),
         "implied_vol": ("py_vollib_vectorized", peer_implied),
         "heston_surface": ("QuantLib loop", peer_heston),
         "heston_flat": ("QuantLib loop", peer_heston)}


# ----------------------------------------------------------------------------- timing
def best_of(fn, repeat, cpu=False):
    """Best wall time of ``repeat`` calls (with ``cpu=True``: best wall and best process CPU time,
    which on a shared machine counts only the time this process ran)."""
    import jax

    times, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return (min(times), min(cpus)) if cpu else min(times)


def child(name, cache):
    """Fresh process: import, then the first call of one entry point (stdout: JSON)."""
    start = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxvol

    jaxvol.enable_compilation_cache(cache, min_compile_time_secs=0.0)
    imported = time.perf_counter() - start
    fn, args, kwargs = cases()[name][0]()
    start = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    print(json.dumps({"import": imported, "first": time.perf_counter() - start}))


def first_calls(name, cores):
    with tempfile.TemporaryDirectory() as cache:
        out = []
        for _ in range(2):  # cold, then cached
            cmd = [sys.executable, __file__, "--child", name, "--cache", cache,
                   "--cores", str(cores)]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out.append(json.loads(run.stdout.strip().splitlines()[-1])["first"])
    return out


def import_time():
    def timed(code):
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - start)
        return best

    return timed("import jax"), timed("import jax, jaxvol")


def agreement(name, ours, theirs):
    if name == "greeks":
        ours, theirs = np.asarray(ours.price), theirs[0]
    if name == "implied_vol":
        ours = np.asarray(ours.vol)
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    ok = np.isfinite(ours) & np.isfinite(theirs)
    if name.startswith("heston"):
        return f"max |diff| {np.max(np.abs(ours[ok] - theirs[ok])):.1e} (price units, S=100)"
    scale = np.maximum(np.abs(theirs[ok]), 1e-300)
    return f"median rel diff {np.median(np.abs(ours[ok] - theirs[ok]) / scale):.1e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cores", type=int, default=0, help="pin to this many cores (0: all)")
    parser.add_argument("--only", default="")
    parser.add_argument("--skip-first-call", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--child", default="")
    parser.add_argument("--cache", default="")
    args = parser.parse_args()
    if args.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    if args.child:
        return child(args.child, args.cache)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxvol  # noqa: F401

    cores = len(os.sched_getaffinity(0))
    print(f"# JAX {jax.__version__}, {jax.devices()[0].platform}, {cores} core(s), "
          f"load average {os.getloadavg()[0]:.2f} (1 min), repeat {args.repeat}", flush=True)
    if not args.skip_import:
        jax_s, jaxvol_s = import_time()
        print(f"import jax {jax_s:.2f} s; import jax, jaxvol {jaxvol_s:.2f} s: jaxvol adds "
              f"{jaxvol_s - jax_s:.2f} s", flush=True)
    selected = args.only.split(",") if args.only else list(cases())
    header = ("entry point", "options", "first cold s", "first cached s", "direct ms",
              "under jit ms", "peer", "peer ms", "direct vs peer", "agreement",
              "direct CPU ms", "peer CPU ms", "CPU ratio")
    print(" | ".join(header), flush=True)
    for name in selected:
        make, count = cases()[name]
        fn, a, kw = make()
        cold, cached = ((np.nan, np.nan) if args.skip_first_call
                        else first_calls(name, args.cores))
        ours = jax.block_until_ready(fn(*a, **kw))
        static = {k: v for k, v in kw.items() if isinstance(v, str)}
        traced = {k: v for k, v in kw.items() if k not in static}
        jitted = jax.jit(lambda a, t: fn(*a, **t, **static))
        jax.block_until_ready(jitted(a, traced))  # compile outside the timing
        has_peer = name in PEERS and not args.skip_peers
        if has_peer:
            label, peer = PEERS[name]
            theirs = peer(*a, **kw)
        # interleaved: direct, under jit, peer, repeated (best of each): one load for all three
        best = {"direct": (np.inf, np.inf), "jit": (np.inf, np.inf), "peer": (np.inf, np.inf)}
        rounds = [("direct", lambda: fn(*a, **kw)), ("jit", lambda: jitted(a, traced))]
        if has_peer:
            rounds.append(("peer", lambda: peer(*a, **kw)))
        for i in range(args.repeat):
            for key, call in rounds:
                if key == "peer" and name.startswith("heston") and i > 0:
                    continue  # the QuantLib loop takes minutes: once
                wall, cpu = best_of(call, 1, cpu=True)
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
        direct, direct_cpu = best["direct"]
        under_jit = best["jit"][0]
        row = [name, f"{count:,}", f"{cold:.2f}", f"{cached:.2f}", f"{direct * 1e3:.1f}",
               f"{under_jit * 1e3:.1f}"]
        if has_peer:
            peer_s, peer_cpu = best["peer"]
            row += [label, f"{peer_s * 1e3:.1f}", f"{peer_s / direct:.2f}x",
                    agreement(name, ours, theirs), f"{direct_cpu * 1e3:.1f}",
                    f"{peer_cpu * 1e3:.1f}", f"{peer_cpu / direct_cpu:.2f}x"]
        else:
            row += ["", "", "", "", f"{direct_cpu * 1e3:.1f}", "", ""]
        print(" | ".join(row), flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
