"""Synthetic Black-76 option boards in the chains long schema (tests, examples, benchmarks).

Prices are exact Black prices (``jax.scipy.special.ndtr``; float64 when x64 is enabled), so
put-call parity C - P = D (F - K) holds to round-off and the true F, D and vols are known.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

__all__ = ["black_prices", "smile_vol", "black_board"]


def black_prices(forward, strike, expiry, vol, is_call, discount):
    """Discounted Black-76 prices (numpy in, numpy out), broadcasting."""
    import jax.numpy as jnp

    arrays = [jnp.asarray(np.asarray(a, dtype=np.float64))
              for a in (forward, strike, expiry, vol, discount)]
    return np.asarray(_price_kernel()(*arrays, jnp.asarray(is_call)))


@functools.cache
def _price_kernel():
    """The jitted Black formula (built on first use: importing boards touches no JAX)."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import ndtr

    def price(forward, strike, expiry, vol, discount, is_call):
        sd = vol * jnp.sqrt(expiry)
        d1 = jnp.log(forward / strike) / sd + 0.5 * sd
        d2 = d1 - sd
        call = forward * ndtr(d1) - strike * ndtr(d2)
        put = strike * ndtr(-d2) - forward * ndtr(-d1)
        return discount * jnp.where(is_call, call, put)

    return jax.jit(price)


def smile_vol(moneyness, atm=0.2, skew=-0.05, curvature=0.1):
    """A mild smile sigma(k) = atm + skew k + curvature k^2 (k = ln K/F), the same at every
    expiry (so total variance grows with expiry: no calendar arbitrage); gentle enough that the
    boards of :func:`black_board` are free of static arbitrage (checked in the tests)."""
    return atm + skew * moneyness + curvature * moneyness**2


def black_board(n_underlyings: int = 2, n_expiries: int = 3, n_strikes: int = 21, *,
                seed: int = 0, relative_spread: float = 0.02, min_spread: float = 0.01,
                noise: float = 0.0, width: float = 2.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A clean board (one call and one put per strike) and its true slice parameters.

    Forward, discount and ATM vol are drawn per (underlying, expiry) from ``seed``; strikes span
    +-``width`` standard deviations around the forward.  The quote spread is
    max(``min_spread``, ``relative_spread`` * price); the mid is the Black price plus, if
    ``noise`` > 0, a uniform draw of ``noise`` half-spreads.  Bids are floored at 0.
    Returns (board, truth) with truth columns underlying, expiry, forward, discount, atm_vol.
    """
    rng = np.random.default_rng(seed)
    u, e = n_underlyings, n_expiries
    expiry = np.sort(rng.uniform(0.05, 2.0, (u, e)), axis=1)
    spot = 10.0 ** rng.uniform(1.0, 3.0, (u, 1))
    rate, carry = rng.uniform(0.0, 0.06, (u, 1)), rng.uniform(-0.03, 0.05, (u, 1))
    forward, discount = spot * np.exp(carry * expiry), np.exp(-rate * expiry)
    atm = rng.uniform(0.12, 0.5, (u, 1)) * np.ones((u, e))
    std = atm * np.sqrt(expiry)
    z = np.linspace(-width, width, n_strikes)
    strike = forward[..., None] * np.exp(std[..., None] * z)          # [u, e, n]
    strike = np.round(strike, 10)
    shape = (u, e, n_strikes, 2)
    is_call = np.broadcast_to(np.array([True, False]), shape)
    moneyness = np.log(strike / forward[..., None])
    vol = smile_vol(moneyness, atm=atm[..., None])
    price = black_prices(forward[..., None, None], strike[..., None], expiry[..., None, None],
                         vol[..., None], is_call, discount[..., None, None])
    half = 0.5 * np.maximum(min_spread, relative_spread * price)
    mid = price + noise * half * rng.uniform(-1.0, 1.0, shape)
    board = pd.DataFrame({
        "underlying": np.repeat([f"U{i:05d}" for i in range(u)], e * n_strikes * 2),
        "expiry": np.broadcast_to(expiry[..., None, None], shape).reshape(-1),
        "strike": np.broadcast_to(strike[..., None], shape).reshape(-1),
        "option_type": np.where(is_call, "C", "P").reshape(-1),
        "bid": np.maximum(mid - half, 0.0).reshape(-1),
        "ask": (mid + half).reshape(-1)})
    truth = pd.DataFrame({"underlying": np.repeat([f"U{i:05d}" for i in range(u)], e),
                          "expiry": expiry.reshape(-1), "forward": forward.reshape(-1),
                          "discount": discount.reshape(-1), "atm_vol": atm.reshape(-1)})
    return board, truth
