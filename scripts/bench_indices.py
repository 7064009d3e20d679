"""Benchmark: Cboe and VXJ indices for 5,000 underlyings x 2 expiries x 150 strikes.

jaxvol (one batched, jitted call per method) against what a user would otherwise write:

- Cboe peer: a per-underlying Python/numpy implementation of the methodology (the walk strike by
  strike, as open-source VIX calculators do), timed on a subset and scaled linearly;
- VXJ peers: (a) py_vollib_vectorized implied vols of all 1.5 M options in one vectorised call
  plus a numpy-vectorised Gaussian integral with the same monotone cubic interpolation (a
  strong peer); (b) scipy brentq
  implied vols option by option (subset, scaled).

Prints timings and ratios (same run, same machine) and checks that peers and jaxvol agree.
Run: ``.venv/bin/python scripts/bench_indices.py [--underlyings 5000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

import jaxvol

STRIKES, TERMS = 150, 2


# ------------------------------------------------------------------------------ the market
def black(forward, strike, expiry, vol, is_call, discount):
    sd = vol * np.sqrt(expiry)
    d1 = np.log(forward / strike) / sd + sd / 2
    call = forward * ndtr(d1) - strike * ndtr(d1 - sd)
    return discount * np.where(is_call, call, call - forward + strike)


def synthetic_boards(underlyings, seed=0):
    """Skewed smiles, 150 listed strikes per expiry, tick 0.05 quotes with zero-bid wings."""
    rng = np.random.default_rng(seed)
    forward = rng.uniform(20, 500, (underlyings, 1, 1))
    minutes = np.stack([rng.uniform(23, 30, underlyings), rng.uniform(31, 37, underlyings)],
                       axis=1) * 1440.0
    rate = np.full((underlyings, TERMS), 0.03)
    expiry = (minutes / 525_600)[..., None]
    atm = rng.uniform(0.15, 0.6, (underlyings, 1, 1))
    skew = rng.uniform(-0.6, -0.1, (underlyings, 1, 1))
    spacing = forward * atm * np.sqrt(35 / 365) * 8 / STRIKES
    strikes = forward + (np.arange(STRIKES) - STRIKES * 0.55) * spacing
    strikes = np.round(np.maximum(strikes, 0.05 * forward), 2)
    k = np.log(strikes / forward)
    vol = np.sqrt(np.maximum(atm**2 * (1 + 2 * skew * k / atm + 3 * k**2), 0.02))
    discount = np.exp(-rate[..., None] * expiry)
    quotes = []
    for is_call in (True, False):
        price = black(forward, strikes, expiry, vol, is_call, discount)
        half = np.maximum(0.025, 0.02 * price)
        quotes += [np.maximum(np.floor((price - half) / 0.05) * 0.05, 0.0),
                   np.ceil((price + half) / 0.05) * 0.05]
    return (strikes * np.ones((1, TERMS, 1)), *quotes, np.ones_like(quotes[0], bool), minutes,
            rate)


# ------------------------------------------------------------------------------ peers
def peer_cboe_term(k, cb, ca, pb, pa, minutes, rate):
    """Straightforward per-chain Cboe sigma^2 (numpy + Python loops)."""
    t = minutes / 525_600.0
    growth = np.exp(rate * t)
    cm, pm = (cb + ca) / 2, (pb + pa) / 2
    both = (cb > 0) & (pb > 0)
    i = np.flatnonzero(both)[np.argmin(np.abs(cm - pm)[both])]
    f = k[i] + growth * (cm[i] - pm[i])
    i0 = np.flatnonzero(k <= f)[-1]
    chosen = {i0: (pm[i0] + cm[i0]) / 2}
    for step, bids, mids in ((-1, pb, pm), (1, cb, cm)):
        previous_zero, j = False, i0 + step
        while 0 <= j < len(k):
            if bids[j] <= 0:
                if previous_zero:
                    break
                previous_zero = True
            else:
                previous_zero = False
                chosen[j] = mids[j]
            j += step
    idx = np.array(sorted(chosen))
    ks = k[idx]
    dk = np.empty_like(ks)
    dk[1:-1] = (ks[2:] - ks[:-2]) / 2
    dk[0], dk[-1] = ks[1] - ks[0], ks[-1] - ks[-2]
    q = np.array([chosen[j] for j in idx])
    return (2 * np.sum(dk / ks**2 * growth * q) - (f / k[i0] - 1) ** 2) / t


def peer_cboe(boards, lanes):
    k, cb, ca, pb, pa, _, minutes, rate = boards
    out = np.empty((lanes, TERMS))
    for u in range(lanes):
        for t in range(TERMS):
            out[u, t] = peer_cboe_term(k[u, t], cb[u, t], ca[u, t], pb[u, t], pa[u, t],
                                       minutes[u, t], rate[u, t])
    return out


def _otm_inputs(boards, forward):
    k, cb, ca, pb, pa, _, minutes, rate = boards
    is_call = k >= forward[..., None]
    price = np.where(is_call, (cb + ca) / 2, (pb + pa) / 2)
    usable = np.where(is_call, cb > 0, pb > 0)
    return k, price, is_call, usable, minutes / 525_600, rate


def _numpy_node_derivatives(z, w, count):
    """jaxvol's node slopes on compacted nodes (kept first): Hyman-limited three-point
    estimates, 0 at data extrema, one-sided three-point with the PCHIP rule at the ends."""
    width = np.diff(z, axis=-1)
    rise = np.diff(w, axis=-1)
    scale = np.maximum(np.abs(w[..., :-1]), np.abs(w[..., 1:]))
    ok = (width > 0) & (np.abs(rise) > 64 * np.finfo(float).eps * scale)
    s = np.where(ok, rise / np.where(ok, width, 1), 0.0)
    pad = np.zeros(z.shape[:-1] + (1,))
    s_prev, s_next = np.concatenate([pad, s], -1), np.concatenate([s, pad], -1)
    h_prev, h_next = np.concatenate([pad, width], -1), np.concatenate([width, pad], -1)
    total = h_prev + h_next
    parabola = (h_next * s_prev + h_prev * s_next) / np.where(total > 0, total, 1)
    bound = 3 * np.minimum(np.abs(s_prev), np.abs(s_next))
    d = np.where(s_prev * s_next > 0, np.sign(parabola) * np.minimum(np.abs(parabola), bound),
                 0.0)

    def end(s_near, h_near, s_far, h_far, has_far):
        span = h_near + h_far
        e = ((2 * h_near + h_far) * s_near - h_near * s_far) / np.where(span > 0, span, 1)
        e = np.where(np.sign(e) != np.sign(s_near), 0.0, e)
        turn = (np.sign(s_near) != np.sign(s_far)) & (np.abs(e) > 3 * np.abs(s_near))
        e = np.where(turn, 3 * s_near, e)
        return np.where(has_far, e, s_near)

    take = lambda a, i: np.take_along_axis(a, np.clip(i, 0, a.shape[-1] - 1)[..., None],  # noqa
                                           -1)[..., 0]
    last = count - 1
    first_d = end(s[..., 0], width[..., 0], s[..., 1], width[..., 1], count >= 3)
    last_d = end(take(s, last - 1), take(width, last - 1), take(s, last - 2),
                 take(width, last - 2), count >= 3)
    d[..., 0] = first_d
    np.put_along_axis(d, np.clip(last, 0, None)[..., None], last_d[..., None], -1)
    return d


def numpy_vxj_integral(vol, k, forward, expiry, usable):
    """Vectorised VXJ integral, the same algorithm as jaxvol: monotone C1 cubic of total
    variance in z (implied-map check, linear fallback), flat tails, closed-form integral on
    pieces at least 0.5 wide and 8-point Gauss-Legendre on narrower ones."""
    ok = usable & np.isfinite(vol) & (vol > 0)
    w = np.where(ok, vol, 0.2) ** 2 * expiry[..., None]
    z = (np.log(k / forward[..., None]) + w / 2) / np.sqrt(w)
    running = np.maximum.accumulate(np.where(ok, z, -np.inf), axis=-1)
    previous = np.concatenate([np.full(z.shape[:-1] + (1,), -np.inf), running[..., :-1]], -1)
    keep = ok & (z > previous)
    order = np.argsort(~keep, axis=-1, kind="stable")
    zc, wc = np.take_along_axis(z, order, -1), np.take_along_axis(w, order, -1)
    count = keep.sum(-1)
    last = np.maximum(count - 1, 0)[..., None]
    filler = np.arange(z.shape[-1]) >= count[..., None]
    zc = np.where(filler, np.take_along_axis(zc, last, -1), zc)
    wc = np.where(filler, np.take_along_axis(wc, last, -1), wc)
    d = _numpy_node_derivatives(zc, wc, count)
    z0, z1, w0, w1 = zc[..., :-1], zc[..., 1:], wc[..., :-1], wc[..., 1:]
    d0, d1 = d[..., :-1], d[..., 1:]
    active = z1 > z0
    h = np.where(active, z1 - z0, 1.0)
    secant = np.where(active, (w1 - w0) / h, 0.0)
    c2, c3 = (3 * secant - 2 * d0 - d1) / h, (d0 + d1 - 2 * secant) / (h * h)

    def passes(c1, c2, c3):
        good = active
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            u = t * h
            value = w0 + u * (c1 + u * (c2 + u * c3))
            slope = c1 + u * (2 * c2 + 3 * u * c3)
            root = np.sqrt(np.maximum(value, np.finfo(float).tiny))
            good = good & (value > 0) & (root + slope * (0.5 * (z0 + u) / root - 0.5) > 0)
        return good

    cubic = passes(d0, c2, c3)
    c1, c2, c3 = np.where(cubic, d0, secant), np.where(cubic, c2, 0), np.where(cubic, c3, 0)
    pdf = lambda x: np.exp(-x * x / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    q2, q1 = c3, c2 - z0 * c3
    q0 = c1 - z0 * q1 + 2 * q2
    closed = ((w0 - z0 * q0 + q1) * (ndtr(z1) - ndtr(z0)) - (q0 + h * (q1 + h * q2)) * pdf(z1)
              + q0 * pdf(z0))
    b1, b2, b3 = c1 * h, c2 * h * h, c3 * h * h * h   # narrow pieces: Gauss-Legendre, as jaxvol
    nodes, weights = np.polynomial.legendre.leggauss(8)
    legendre = sum(weight * (w0 + t * (b1 + t * (b2 + t * b3))) * pdf(z0 + t * h)
                   for t, weight in zip(0.5 * (nodes + 1), weights)) * 0.5 * h
    seg = np.where(h < 0.5, legendre, closed)
    tails = wc[..., 0] * ndtr(zc[..., 0]) + np.take_along_axis(wc, last, -1)[..., 0] * ndtr(
        -np.take_along_axis(zc, last, -1)[..., 0])
    return (tails + np.where(active, seg, 0).sum(-1)) / expiry


def peer_vxj_vectorized(boards, forward):
    import py_vollib_vectorized as pvv

    k, price, is_call, usable, expiry, rate = _otm_inputs(boards, forward)
    shape = k.shape
    flag = np.where(is_call, "c", "p").ravel()
    fwd = np.broadcast_to(forward[..., None], shape).ravel()
    t = np.broadcast_to(expiry[..., None], shape).ravel()
    r = np.broadcast_to(rate[..., None], shape).ravel()
    vol = pvv.vectorized_implied_volatility_black(
        np.where(usable, price, np.nan).ravel(), fwd, k.ravel(), r, t, flag,
        return_as="numpy", on_error="ignore")
    return numpy_vxj_integral(np.asarray(vol, float).reshape(shape), k, forward, expiry, usable)


def peer_vxj_brentq(boards, forward, lanes):
    k, price, is_call, usable, expiry, rate = _otm_inputs(boards, forward)
    vol = np.full(k[:lanes].shape, np.nan)
    for idx in np.ndindex(vol.shape):
        if not usable[idx]:
            continue
        u, t = idx[0], idx[1]
        d = np.exp(-rate[u, t] * expiry[u, t])
        def gap(s, u=u, t=t, d=d, idx=idx):
            return black(forward[u, t], k[idx], expiry[u, t], s, is_call[idx], d) - price[idx]

        try:
            vol[idx] = brentq(gap, 1e-4, 5.0, xtol=1e-14)
        except ValueError:
            pass
    return numpy_vxj_integral(vol, k[:lanes], forward[:lanes], expiry[:lanes], usable[:lanes])


# ------------------------------------------------------------------------------ timing
def best_of(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--underlyings", type=int, default=5000)
    parser.add_argument("--peer-lanes", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    jaxvol.configure()
    import jax

    n = args.underlyings
    boards = synthetic_boards(n)
    device = [jax.numpy.asarray(a) for a in boards]
    print(f"{n} underlyings x {TERMS} expiries x {STRIKES} strikes on {jax.devices()[0]}")

    def runner(fn, presorted):
        return lambda: jax.block_until_ready(fn(*device, presorted=presorted))

    runs = {("cboe", True): runner(jaxvol.indices.cboe_vix_batch, True),
            ("cboe", False): runner(jaxvol.indices.cboe_vix_batch, False),
            ("vxj", True): runner(jaxvol.indices.vxj_index_batch, True),
            ("vxj", False): runner(jaxvol.indices.vxj_index_batch, False)}
    timings, results = {}, {}
    for key, fn in runs.items():
        start = time.perf_counter()
        fn()
        print(f"  {key[0]} (presorted={key[1]}): first call (trace + compile + run) "
              f"{time.perf_counter() - start:.2f} s")
        timings[key], results[key] = best_of(fn, args.repeats)
    t_cboe, cboe = timings["cboe", True], results["cboe", True]
    t_vxj, vxj = timings["vxj", True], results["vxj", True]
    for method in ("cboe", "vxj"):
        same = np.array_equal(np.asarray(results[method, True].index),
                              np.asarray(results[method, False].index), equal_nan=True)
        print(f"  {method}: with the in-kernel sort {timings[method, False]:.3f} s "
              f"(identical results: {same})")
    forward = np.asarray(cboe.forward)

    lanes = min(args.peer_lanes, n)
    t_peer, peer = best_of(lambda: peer_cboe(boards, lanes), 1)
    t_peer_full = t_peer * n / lanes
    cboe_diff = np.nanmax(np.abs(peer - np.asarray(cboe.variance[:lanes])))
    small = tuple(a[:2] for a in boards)
    peer_vxj_vectorized(small, forward[:2])   # numba compilation of the peer, not timed
    t_pvv, pvv = best_of(lambda: peer_vxj_vectorized(boards, forward), 1)
    pvv_diff = np.nanmax(np.abs(pvv - np.asarray(vxj.variance)))
    brent_lanes = max(lanes // 10, 1)
    t_brent, brent = best_of(lambda: peer_vxj_brentq(boards, forward, brent_lanes), 1)
    t_brent_full = t_brent * n / brent_lanes
    brent_diff = np.nanmax(np.abs(brent - np.asarray(vxj.variance[:brent_lanes])))

    ok_cboe = float(np.mean(np.asarray(cboe.status) == 0))
    ok_vxj = float(np.mean(np.asarray(vxj.status) == 0))
    print(f"  lanes OK: cboe {ok_cboe:.4f}, vxj {ok_vxj:.4f}")
    table = [
        ("jaxvol cboe_vix_batch (presorted)", t_cboe, f"{t_cboe / n * 1e6:.1f} us/underlying"),
        ("python/numpy Cboe loop", t_peer_full,
         f"scaled from {lanes}; ratio {t_peer_full / t_cboe:.1f}x; "
         f"max |d sigma^2| {cboe_diff:.1e}"),
        ("jaxvol vxj_index_batch (presorted)", t_vxj, f"{t_vxj / n * 1e6:.1f} us/underlying"),
        ("py_vollib_vectorized + numpy", t_pvv,
         f"full batch; ratio {t_pvv / t_vxj:.1f}x; max |d sigma^2| {pvv_diff:.1e}"),
        ("scipy brentq + numpy", t_brent_full,
         f"scaled from {brent_lanes}; ratio {t_brent_full / t_vxj:.1f}x; "
         f"max |d sigma^2| {brent_diff:.1e}"),
    ]
    for name, seconds, note in table:
        print(f"{name:36s} {seconds:9.3f} s   ({note})")


if __name__ == "__main__":
    main()
