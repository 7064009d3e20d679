"""``jaxvol demo``: a synthetic board inverted in one jitted batch, with a summary.

The board: ``underlyings x expiries x strikes`` options with deterministic random forwards,
expiries from 1 week to 3 years, strikes spread over +-4 standard deviations and true vols
from a skewed smile; calls above the forward, puts below (as quoted), and a few deliberately
bad quotes (NaN, below intrinsic, above the maximum, zero expiry) that must come back flagged.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxvol.black import black_price
from jaxvol.implied import IVStatus, implied_vol

__all__ = ["run_demo", "synthetic_board"]


def synthetic_board(underlyings: int, expiries: int, strikes: int, seed: int, dtype=np.float64):
    """Flat arrays (forward, strike, expiry, vol, is_call, price) with ~0.1% bad quotes."""
    rng = np.random.default_rng(seed)
    shape = (underlyings, expiries, strikes)
    forward = np.broadcast_to(rng.lognormal(np.log(100.0), 1.0, (underlyings, 1, 1)), shape)
    expiry = np.broadcast_to(np.geomspace(7 / 365, 3.0, expiries)[None, :, None], shape)
    atm = np.broadcast_to(rng.uniform(0.12, 0.6, (underlyings, 1, 1)), shape)
    z = np.broadcast_to(np.linspace(-4.0, 4.0, strikes)[None, None, :], shape)
    moneyness = z * atm * np.sqrt(expiry)
    strike = forward * np.exp(moneyness)
    vol = atm * (1.0 - 0.25 * np.tanh(moneyness / np.sqrt(expiry)) + 0.08 * z**2 / 16)
    is_call = strike >= forward
    flat = [np.ascontiguousarray(a).reshape(-1) for a in (forward, strike, expiry, vol, is_call)]
    forward, strike, expiry, vol, is_call = flat
    price = np.array(jax.jit(black_price)(forward, strike, expiry, vol, is_call))
    bad = rng.choice(price.size, size=max(4, price.size // 1000), replace=False)
    kinds = np.arange(bad.size) % 4
    price[bad[kinds == 0]] = np.nan
    price[bad[kinds == 1]] = -1.0
    price[bad[kinds == 2]] = np.where(is_call, forward, strike)[bad[kinds == 2]] * 1.01
    expiry = expiry.copy()
    expiry[bad[kinds == 3]] = 0.0
    cast = [a.astype(dtype) for a in (forward, strike, expiry, vol, price)]
    return dict(zip(("forward", "strike", "expiry", "vol", "price"), cast), is_call=is_call)


def run_demo(underlyings: int = 300, expiries: int = 12, strikes: int = 60, seed: int = 2026,
             float32: bool = False) -> str:
    """Build the board, invert it (compile once, then steady state), return a text summary."""
    dtype = np.float32 if float32 else np.float64
    board = synthetic_board(underlyings, expiries, strikes, seed, dtype)
    solve = jax.jit(implied_vol)
    args = (board["price"], board["forward"], board["strike"], board["expiry"], board["is_call"])
    start = time.perf_counter()
    jax.block_until_ready(solve(*args))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(solve(*args))
    run_s = time.perf_counter() - start
    vol, status = np.asarray(result.vol), np.asarray(result.status)
    ok = status == IVStatus.OK
    rel = np.abs(vol[ok] / board["vol"][ok] - 1)
    lines = [
        f"jaxvol demo: {underlyings} underlyings x {expiries} expiries x {strikes} strikes "
        f"= {vol.size:,} options ({np.dtype(dtype).name}, {jax.devices()[0].platform})",
        "status counts:",
    ]
    for code in IVStatus:
        lines.append(f"  {code.name:<22s} {int(np.sum(status == code)):>10,}")
    lines += [
        f"accuracy vs generating vols (OK lanes): max rel {rel.max():.2e}, "
        f"median rel {np.median(rel):.2e}",
        f"compile + first run: {compile_s:.2f} s; steady state: {run_s * 1e3:.1f} ms "
        f"= {vol.size / run_s / 1e6:.2f} M implied vols/s",
    ]
    return "\n".join(lines)
