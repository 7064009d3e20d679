"""Forward F and discount factor D of each slice from put-call parity, C - P = D (F - K).

The regression uses the strikes quoting both a usable call and a usable put, restricted to the
``near_strikes`` of them closest to the anchor strike (the one with the smallest |C - P| of
mids, i.e. nearest the money).  With x = K - K_anchor the model is C - P = a + b x, with
D = -b and F = K_anchor + a / D.  Each pair is weighted by 1 / h^2, h the half-width of its
C - P quote interval ((call spread + put spread) / 2), floored at the slice's median h: wide
quotes count less, and a locked quote (bid = ask) cannot outweigh the slice.  Outliers are
damped by iteratively reweighted least squares with Huber weights min(1, c / |u|) on the
standardised residual u = r / (h s), s a robust scale (MAD of r / h, at least 1, so that
residuals within the quoted spreads are never damped); residuals beyond ``reject`` (10) scale
units get weight 0 (gross errors).  IRLS starts from a high-breakdown Theil-Sen line (median
pairwise slope) and runs a fixed number of iterations per slice (no while_loop under vmap).

Known values replace fitted ones: both supplied -> no fit (status SUPPLIED); D supplied -> a
one-parameter fit of F; F supplied -> a one-parameter fit of D.  Standard errors come from the
weighted least-squares covariance at the final weights (residual variance estimated from the
fit), propagated to F by the delta method.

A supplied forward is cross-checked against the quotes: beside the fit above, the same
regression runs with the forward left free (the supplied D kept where given), giving
``parity_forward``; a supplied forward further from it than ``max(forward_tolerance * F,
4 parity standard errors)`` sets ``mismatch`` (the chains layer flags the slice's rows
``FORWARD_MISMATCH``).  The supplied values are still the ones used: the flag says that the
carry inputs and the quotes disagree, not which one is wrong.  Both fits are one vmapped
kernel (a variant axis of two), so the check adds run time to the forward kernel, not a
second compiled program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol.status import domain_status

__all__ = ["ForwardStatus", "ForwardResult", "parity_forwards"]

_SPREAD_FLOOR = 1e-12  # relative to the anchor strike: keeps 1/h^2 finite on locked quotes
_MEDIAN_FLOOR = 1.0    # no pair's half-width counts below the slice's median one: a
#                        locked (bid = ask) quote would otherwise outweigh the whole slice
MISMATCH_SIGMAS = 4.0  # a supplied forward within 4 parity standard errors is never a mismatch


ForwardStatus = domain_status("ForwardStatus", "chains", {
    "OK": 0,              # estimated from parity (possibly with D or F supplied)
    "TOO_FEW_POINTS": 4,  # fewer call/put pairs than parameters to fit (old name TOO_FEW_PAIRS)
    "SUPPLIED": 20,       # forward and discount both supplied by the user: no fit (usable)
    "NON_POSITIVE": 21,   # the fit gave a non-positive or non-finite F or D
}, "Outcome per slice of :func:`parity_forwards` (codes: jaxvol.status). OK and SUPPLIED "
   "carry a usable forward.", aliases={"TOO_FEW_PAIRS": "TOO_FEW_POINTS"})


class ForwardResult(NamedTuple):
    """Per-slice arrays [slices]."""

    forward: jax.Array
    discount: jax.Array
    forward_se: jax.Array
    discount_se: jax.Array
    n_pairs: jax.Array   #: int32: pairs carrying weight in the final fit
    status: jax.Array    #: int32 codes of :class:`ForwardStatus`
    #: the forward of put-call parity alone (the supplied D kept where given): the check of a
    #: supplied forward; NaN where parity gives none (too few pairs, non-positive)
    parity_forward: jax.Array | None = None
    parity_forward_se: jax.Array | None = None
    #: bool: a supplied forward that parity contradicts (see the module doc)
    mismatch: jax.Array | None = None


def parity_forwards(strike, call_bid, call_ask, put_bid, put_ask, call_mask, put_mask,
                    forward_in, discount_in, *, call_mid=None, put_mid=None,
                    near_strikes: int = 12, iterations: int = 20,
                    huber: float = 1.345, reject: float = 10.0,
                    forward_tolerance: float = 1e-3) -> ForwardResult:
    """Forwards and discount factors of a batch of slices.

    Quotes and masks are [slices, strikes]; ``forward_in``/``discount_in`` are [slices] (NaN
    where unknown).  Mids default to (bid + ask) / 2.  ``forward_tolerance``: relative gap
    between a supplied forward and the parity forward above which (and above 4 standard errors
    of the parity forward) ``mismatch`` is set.  Returns the input's float dtype.
    """
    if near_strikes < 2 or iterations < 0 or not huber > 0 or not reject > 0:
        raise ValueError(f"need near_strikes >= 2, iterations >= 0, huber > 0, reject > 0; "
                         f"got {near_strikes}, {iterations}, {huber}, {reject}")
    if not forward_tolerance >= 0:
        raise ValueError(f"forward_tolerance must be >= 0, got {forward_tolerance}")
    call_mid = 0.5 * (call_bid + call_ask) if call_mid is None else call_mid
    put_mid = 0.5 * (put_bid + put_ask) if put_mid is None else put_mid
    kernel = jax.vmap(lambda *a: _slice_forward(*a, near_strikes=near_strikes,
                                                iterations=iterations, huber=huber,
                                                reject=reject))
    # variant 0: the supplied values; variant 1: the forward left free (the check)
    variants = jnp.stack([forward_in, jnp.full_like(forward_in, jnp.nan)])
    both = jax.vmap(kernel, in_axes=(None, None, None, None, 0, None))(
        strike, call_mid - put_mid, (call_ask - call_bid) + (put_ask - put_bid),
        call_mask & put_mask, variants, discount_in)
    given, own = (jax.tree.map(lambda a, i=i: a[i], both) for i in (0, 1))
    return given._replace(parity_forward=own.forward, parity_forward_se=own.forward_se,
                          mismatch=_mismatch(forward_in, own, forward_tolerance))


def _mismatch(forward_in, own: ForwardResult, tolerance):
    """A supplied forward beyond max(tolerance * F, 4 se) of the parity forward."""
    checked = jnp.isfinite(forward_in) & (own.status == ForwardStatus.OK)
    gap = jnp.abs(jnp.where(checked, forward_in - own.forward, 0.0))
    allowed = jnp.maximum(tolerance * jnp.abs(jnp.where(checked, forward_in, 0.0)),
                          MISMATCH_SIGMAS * jnp.where(checked, own.forward_se, 0.0))
    return checked & (gap > allowed)


def _slice_forward(strike, parity, spread, pair, forward_in, discount_in, *, near_strikes,
                   iterations, huber, reject):
    pair = pair & jnp.isfinite(strike) & jnp.isfinite(parity) & jnp.isfinite(spread)
    strike = jnp.where(pair, strike, 0.0)
    parity = jnp.where(pair, parity, 0.0)
    anchor = strike[jnp.argmin(jnp.where(pair, jnp.abs(parity), jnp.inf))]
    near, x, parity, spread = _near_the_money(pair, strike - anchor, parity, spread,
                                              min(near_strikes, strike.shape[0]))
    half = 0.5 * jnp.where(near, spread, 1.0)
    floor = jnp.maximum(_MEDIAN_FLOOR * _masked_median(half, near), _SPREAD_FLOOR * jnp.abs(anchor))
    half = jnp.maximum(half, floor)
    half = jnp.where(half > 0, half, 1.0)
    x = jnp.where(near, x, 0.0)
    base = jnp.where(near, 1.0 / half**2, 0.0)
    fit = lambda w: _weighted_fit(x, parity, w, anchor, forward_in, discount_in)  # noqa: E731
    reweight = lambda f: base * _huber_weights(  # noqa: E731
        _residual(f, x, parity, anchor) / half, near, huber, reject)
    start = _robust_start(x, parity, near, anchor, forward_in, discount_in)
    weight = jax.lax.fori_loop(0, iterations, lambda _, w: reweight(fit(w)), reweight(start))
    return _finish(fit(weight), weight, forward_in, discount_in)


def _near_the_money(pair, x, parity, spread, count):
    """The ``count`` pairs nearest the anchor, compacted to the front (static size ``count``)."""
    distance = jnp.where(pair, jnp.abs(x), jnp.inf)
    order = jnp.argsort(distance)[:count]
    return jnp.isfinite(distance[order]), x[order], parity[order], spread[order]


def _robust_start(x, parity, mask, anchor, forward_in, discount_in) -> "_Fit":
    """A high-breakdown first line: Theil-Sen (median pairwise slope, median intercept), or the
    median of the one free parameter when D or F is supplied.  IRLS starts from its residuals,
    so a few gross outliers at high leverage cannot capture the fit."""
    both = mask[:, None] & mask[None, :] & (x[:, None] < x[None, :])
    gap = jnp.where(both, x[None, :] - x[:, None], 1.0)
    slope = _masked_median(((parity[None, :] - parity[:, None]) / gap).ravel(), both.ravel())
    discount = jnp.where(jnp.isfinite(discount_in), discount_in, -slope)
    safe_d = jnp.where(discount != 0, discount, 1.0)
    forward = anchor + _masked_median((parity + discount * x) / safe_d, mask)
    moneyness = jnp.where(jnp.isfinite(forward_in), forward_in, 0.0) - anchor - x
    usable = mask & (jnp.abs(moneyness) > 0)
    implied_d = _masked_median(parity / jnp.where(usable, moneyness, 1.0), usable)
    known_f = jnp.isfinite(forward_in)
    discount = jnp.where(known_f & ~jnp.isfinite(discount_in), implied_d, discount)
    forward = jnp.where(known_f, forward_in, forward)
    zero = jnp.zeros_like(forward)
    n = jnp.sum(mask)
    return _Fit(forward, discount, zero, zero, n, n)


def _huber_weights(u, mask, threshold, reject):
    """Huber weights min(1, c/|u|) on u scaled by a robust scale; 0 beyond ``reject``."""
    scale = jnp.maximum(1.0, 1.4826 * _masked_median(jnp.abs(u), mask))
    size = jnp.where(mask, jnp.abs(u) / scale, 0.0)
    safe = jnp.where(size > threshold, size, 1.0)
    weight = jnp.where(size > threshold, threshold / safe, 1.0)
    return jnp.where(size > reject, 0.0, weight)


def _masked_median(values, mask):
    ordered = jnp.sort(jnp.where(mask, values, jnp.inf))
    n = jnp.sum(mask)
    lo, hi = jnp.maximum((n - 1) // 2, 0), jnp.maximum(n // 2, 0)
    median = 0.5 * (ordered[lo] + ordered[hi])
    return jnp.where(n > 0, median, 0.0)


class _Fit(NamedTuple):
    forward: jax.Array
    discount: jax.Array
    var_forward: jax.Array
    var_discount: jax.Array
    n_used: jax.Array
    n_params: jax.Array


def _weighted_fit(x, parity, weight, anchor, forward_in, discount_in):
    """WLS in the mode the supplied values allow (both, D only, F only, neither)."""
    known_d, known_f = jnp.isfinite(discount_in), jnp.isfinite(forward_in)
    full = _fit_both(x, parity, weight, anchor)
    given_d = _fit_forward(x, parity, weight, anchor, jnp.where(known_d, discount_in, 1.0))
    given_f = _fit_discount(x, parity, weight, anchor, jnp.where(known_f, forward_in, 1.0))
    chosen = jax.tree.map(lambda a, b: jnp.where(known_d, a, b), given_d,
                          jax.tree.map(lambda a, b: jnp.where(known_f, a, b), given_f, full))
    return chosen


def _sums(x, parity, weight):
    used = weight > 0
    return (jnp.sum(weight), jnp.sum(weight * x), jnp.sum(weight * x * x),
            jnp.sum(weight * parity), jnp.sum(weight * x * parity), jnp.sum(used))


def _sigma2(residual, weight, n_used, n_params):
    dof = jnp.maximum(n_used - n_params, 1).astype(residual.dtype)
    return jnp.sum(weight * residual**2) / dof


def _fit_both(x, parity, weight, anchor):
    sw, sx, sxx, sy, sxy, n = _sums(x, parity, weight)
    det = sw * sxx - sx * sx
    safe_det = jnp.where(det > 0, det, 1.0)
    safe_sw = jnp.where(sw > 0, sw, 1.0)
    slope = (sw * sxy - sx * sy) / safe_det
    level = (sy - slope * sx) / safe_sw
    s2 = _sigma2(parity - level - slope * x, weight, n, 2)
    var_a, var_b, cov = s2 * sxx / safe_det, s2 * sw / safe_det, -s2 * sx / safe_det
    discount = -slope
    safe_d = jnp.where(discount != 0, discount, 1.0)
    offset = level / safe_d
    var_f = (var_a + offset**2 * var_b + 2.0 * offset * cov) / safe_d**2
    return _Fit(anchor + offset, discount, var_f, var_b, n, jnp.full_like(n, 2))


def _fit_forward(x, parity, weight, anchor, discount):
    sw, _, _, sy, _, n = _sums(x + 0.0, parity + discount * x, weight)
    safe_sw = jnp.where(sw > 0, sw, 1.0)
    level = sy / safe_sw
    s2 = _sigma2(parity + discount * x - level, weight, n, 1)
    safe_d = jnp.where(discount != 0, discount, 1.0)
    return _Fit(anchor + level / safe_d, discount + 0 * level, s2 / safe_sw / safe_d**2,
                0 * level, n, jnp.full_like(n, 1))


def _fit_discount(x, parity, weight, anchor, forward):
    moneyness = forward - anchor - x  # F - K
    sxx = jnp.sum(weight * moneyness**2)
    safe = jnp.where(sxx > 0, sxx, 1.0)
    discount = jnp.sum(weight * moneyness * parity) / safe
    n = jnp.sum(weight > 0)
    s2 = _sigma2(parity - discount * moneyness, weight, n, 1)
    return _Fit(forward + 0 * discount, discount, 0 * discount, s2 / safe, n,
                jnp.full_like(n, 1))


def _residual(fit: _Fit, x, parity, anchor):
    return parity - fit.discount * (fit.forward - anchor - x)


def _finish(fit: _Fit, weight, forward_in, discount_in) -> ForwardResult:
    supplied = jnp.isfinite(forward_in) & jnp.isfinite(discount_in)
    ok = ((fit.forward > 0) & (fit.discount > 0) & jnp.isfinite(fit.forward)
          & jnp.isfinite(fit.discount))
    status = jnp.where(supplied, ForwardStatus.SUPPLIED,
                       jnp.where(fit.n_used < fit.n_params, ForwardStatus.TOO_FEW_PAIRS,
                                 jnp.where(ok, ForwardStatus.OK, ForwardStatus.NON_POSITIVE)))
    good = (status == ForwardStatus.OK) | supplied
    forward = jnp.where(supplied, forward_in, jnp.where(good, fit.forward, jnp.nan))
    discount = jnp.where(supplied, discount_in, jnp.where(good, fit.discount, jnp.nan))

    def se(variance):
        root = jnp.sqrt(jnp.maximum(variance, 0.0))
        return jnp.where(supplied, 0.0, jnp.where(good, root, jnp.nan))

    return ForwardResult(forward, discount, se(fit.var_forward), se(fit.var_discount),
                         fit.n_used.astype(jnp.int32), status.astype(jnp.int32))
