"""Implied vols of every packed quote at bid, mid and ask (the foundation's ``implied_vol``)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["quote_vols", "QuoteVols", "total_variance_otm"]


class QuoteVols(NamedTuple):
    """Black implied vols; each field is [2, slices, strikes] with index 0 = calls, 1 = puts."""

    bid: jax.Array
    mid: jax.Array
    ask: jax.Array
    mid_status: jax.Array  #: int32 codes of ``jaxvol.IVStatus`` for the mid price
    bid_status: jax.Array = None  #: int32 ``IVStatus`` codes for the bid
    ask_status: jax.Array = None  #: int32 ``IVStatus`` codes for the ask


def quote_vols(strike, expiry, forward, discount, call_quotes, put_quotes) -> QuoteVols:
    """Vols of [slices, strikes] quotes.

    ``call_quotes``/``put_quotes`` are (bid, mid, ask) triples of [slices, strikes] arrays;
    ``expiry``, ``forward``, ``discount`` are [slices].  NaN where no vol solves the price (the
    status says why); padding cells are NaN.
    """
    from jaxvol import implied_vol  # the foundation; imported late (jaxvol imports chains)

    price = jnp.stack([jnp.stack(call_quotes), jnp.stack(put_quotes)], axis=1)  # [3, 2, S, N]
    is_call = jnp.array([True, False])[None, :, None, None]
    per_slice = lambda a: a[None, None, :, None]  # noqa: E731
    result = implied_vol(price, per_slice(forward), strike[None, None], per_slice(expiry),
                         is_call, discount=per_slice(discount))
    status = result.status.astype(jnp.int32)
    return QuoteVols(result.vol[0], result.vol[1], result.vol[2], status[1], status[0],
                     status[2])


def total_variance_otm(strike, expiry, forward, call_vol, put_vol):
    """Total implied variance sigma^2 T of the out-of-the-money side ([slices, strikes]).

    Puts below the forward, calls at or above it; where that side has no vol, the other side's
    (equal in theory by put-call parity).  Also returns log forward moneyness k = ln(K / F).
    """
    below = strike < forward[:, None]
    first = jnp.where(below, put_vol, call_vol)
    second = jnp.where(below, call_vol, put_vol)
    vol = jnp.where(jnp.isfinite(first), first, second)
    safe = jnp.isfinite(strike) & (strike > 0) & (forward[:, None] > 0)
    moneyness = jnp.log(jnp.where(safe, strike, 1.0) / jnp.where(safe, forward[:, None], 1.0))
    return jnp.where(safe, moneyness, jnp.nan), vol * vol * expiry[:, None]
