"""Variance swaps: fair strike from a chain (log-contract replication) and realised variance.

The fair (annualised) variance strike of a variance swap is the forward value of the log
contract, (2/T) E[(F_T - S*)/S* - log(F_T/S*)] + (2/T)[log(F/S*) - (F/S* - 1)], for any
boundary strike S*. Three estimators are offered:

- :func:`replication_variance`: Demeterfi, Derman, Kamal & Zou (1999) — the payoff
  f(K) = (2/T)((K - S*)/S* - log(K/S*)) is replicated by a piecewise-linear portfolio of calls
  above S* and puts below it (weights = changes of slope between listed strikes, one extra strike
  ``dk`` beyond each end), as QuantLib's ``ReplicatingVarianceSwapEngine`` does;
- ``fair_variance_strike(..., method="vxj")``: the VXJ Gaussian integral (no truncation);
- ``fair_variance_strike(..., method="cboe")``: the Cboe delta-K/K^2 strip.

Realised variance: :func:`realized_variance` is sum of squared log returns times the
annualisation factor divided by the number of returns (an estimate of [log F]_T / T).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol.indices import cboe, vxj
from jaxvol.indices.term import term_structure

__all__ = ["fair_variance_strike", "realized_variance", "replication_variance",
           "variance_term_structure"]


def _log_payoff(strike, boundary, expiry):
    return (2.0 / expiry) * ((strike - boundary) / boundary - jnp.log(strike / boundary))


def _wing_weights(strike, side, boundary, expiry, dk):
    """Piecewise-linear replication weights on ``side`` strikes walked in array order."""
    following = jnp.concatenate([jax.lax.cummin(jnp.where(side, strike, jnp.inf),
                                                reverse=True)[1:],
                                 jnp.full((1,), jnp.inf, strike.dtype)])
    safe_strike = jnp.where(side, strike, boundary)
    following = jnp.where(jnp.isfinite(following), following, safe_strike + dk)
    slope = jnp.abs((_log_payoff(following, boundary, expiry)
                     - _log_payoff(safe_strike, boundary, expiry)) / (following - safe_strike))
    slope = jnp.where(side, slope, 0.0)
    position = jnp.arange(strike.shape[-1], dtype=jnp.int32)
    previous = jax.lax.cummax(jnp.where(side, position, -1))
    previous = jnp.concatenate([jnp.full((1,), -1, jnp.int32), previous[:-1]])
    previous_slope = jnp.where(previous >= 0, slope[jnp.maximum(previous, 0)], 0.0)
    return jnp.where(side, slope - previous_slope, 0.0)


def _replication_lane(strike, call_price, put_price, mask, forward, expiry, discount, boundary,
                      dk):
    strike = jnp.where(mask, strike, jnp.inf)
    order = jnp.argsort(strike)
    strike, call_price, put_price, mask = (a[order] for a in (strike, call_price, put_price,
                                                              mask))
    calls = mask & (strike >= boundary)
    puts = mask & (strike <= boundary)
    call_weight = _wing_weights(strike, calls, boundary, expiry, dk)
    # puts walk downward: negate strikes (the payoff is invariant under K, S* -> -K, -S*);
    # the extra end strike is K_min - dk (dk must be below the lowest strike)
    flip = lambda a: a[::-1]  # noqa: E731
    put_weight = flip(_wing_weights(flip(-strike), flip(puts), -boundary, expiry, dk))
    options = jnp.sum(jnp.where(calls, call_weight * call_price, 0.0)
                      + jnp.where(puts, put_weight * put_price, 0.0))
    ratio = forward / boundary
    return (2.0 / expiry) * (jnp.log(ratio) - (ratio - 1.0)) + options / discount


@jax.jit
def replication_variance(strike, call_price, put_price, mask, forward, expiry, discount,
                         boundary, dk):
    """Fair variance strike by Demeterfi et al.'s piecewise-linear replication.

    Args:
      strike, call_price, put_price, mask: ``[..., strikes]`` discounted option prices (calls
        are used at and above ``boundary``, puts at and below it).
      forward, expiry (years), discount, boundary (S*, a listed strike), dk (the spacing of the
        extra end strikes): ``[...]``.

    Returns the annualised fair variance ``[...]`` in the dtype of ``call_price``.
    """
    dtype = jnp.result_type(call_price)
    cast = lambda a: jnp.asarray(a).astype(dtype)  # noqa: E731
    lane = jnp.vectorize(_replication_lane, signature="(n),(n),(n),(n),(),(),(),(),()->()")
    return lane(cast(strike), cast(call_price), cast(put_price), jnp.asarray(mask, bool),
                cast(forward), cast(expiry), cast(discount), cast(boundary), cast(dk))


@edge(static=("method", "presorted"))
def fair_variance_strike(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                         method="vxj", presorted=False):
    """Annualised fair variance-swap strike of each chain: "vxj" (default) or "cboe".

    Inputs as :func:`jaxvol.indices.cboe_variance`. Returns ``(variance, status)``.
    """
    quotes = (strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate)
    if method == "vxj":
        term = vxj.vxj_variance(*quotes, presorted=presorted)
    elif method == "cboe":
        term = cboe.cboe_variance(*quotes, presorted=presorted)
    else:
        raise ValueError(f"method={method!r}; expected 'vxj' or 'cboe'")
    return term.variance, term.status


@edge(static=("method", "presorted"))
def variance_term_structure(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate,
                            target_minutes, *, method="vxj", presorted=False):
    """Constant-maturity model-free variances (e.g. 9 days to 1 year) of many underlyings.

    Args:
      strike ... mask: ``[..., expiries, strikes]`` quotes; minutes, rate: ``[..., expiries]``.
      target_minutes: ``[targets]`` tenors in minutes.
      method: "vxj" or "cboe" per expiry, then :func:`jaxvol.indices.term_structure`
        (linear in total variance between the bracketing expiries).

    Returns ``(variance [..., targets], status [..., expiries])``; failed expiries are left out
    of the interpolation.
    """
    variance, status = fair_variance_strike(strike, call_bid, call_ask, put_bid, put_ask, mask,
                                            minutes, rate, method=method, presorted=presorted)
    return term_structure(minutes, variance, status == 0, target_minutes), status


@functools.partial(jax.jit, static_argnames=("demean",))
def realized_variance(prices, mask=None, *, annualization=252.0, demean=False):
    """Annualised realised variance of price paths: annualization / n * sum (log returns)^2.

    Args:
      prices: ``[..., observations]`` positive prices (fixings); mask: bool, same shape, False
        for padding at the end (a return counts only if both fixings are valid).
      annualization: observations per year (252 for daily business-day fixings; pass 1.0 with
        ``demean=False`` and multiply by n to get [log F]_T itself).
      demean: subtract the mean log return (sample-variance convention, divisor n - 1).

    Returns ``[...]`` in the dtype of ``prices``; NaN where fewer than one (two if demeaned)
    valid returns.
    """
    prices = jnp.asarray(prices)
    mask = jnp.ones(prices.shape, bool) if mask is None else jnp.asarray(mask, bool)
    valid = mask[..., 1:] & mask[..., :-1]
    safe = jnp.where(mask, prices, 1.0)
    returns = jnp.where(valid, jnp.log(safe[..., 1:] / safe[..., :-1]), 0.0)
    count = jnp.sum(valid, axis=-1).astype(prices.dtype)
    if demean:
        mean = jnp.sum(returns, axis=-1, keepdims=True) / jnp.maximum(count, 1.0)[..., None]
        returns = jnp.where(valid, returns - mean, 0.0)
        count = count - 1.0
    enough = count > 0
    total = jnp.sum(returns**2, axis=-1)
    return jnp.where(enough, total * annualization / jnp.where(enough, count, 1.0), jnp.nan)
