"""The VXJ method: model-free variance as a Gaussian integral over the smile.

With log-moneyness k = log(K/F), total implied variance w(k) = sigma(K)^2 T and the change of
variables z = -d2 = (k + w/2) / sqrt(w), the forward price of the log contract is

    E[-2 log(F_T/F)] = integral of w(g(z)) phi(z) dz,        g = inverse of k -> -d2,

(the Carr–Madan strike integral 2 int OTM(K)/K^2 dK after integrating by parts). With z = -d1 =
(k - w/2)/sqrt(w) the same integral is the gamma-swap value (2/F) int OTM(K)/K dK. No
truncation of the strike range and no delta-K discretisation: the integrand is smooth in z and
the Gaussian weight kills the tails.

Choices (documented, deliberate):

- Nodes: implied vols of out-of-the-money mids (puts below the forward, calls at and above),
  only quotes with a positive bid, inverted by the foundation's :func:`jaxvol.implied_vol`.
  Nodes whose inversion fails are dropped (status per lane, never an exception).
- Monotone z-map: the nodes' z must increase with strike (a decreasing z means a negative
  risk-neutral density, i.e. arbitrage). Walking up in strike, a node is kept only if its z is
  above every kept z before it.
- Interpolation: total variance w is a C1 piecewise cubic Hermite function of z between kept
  nodes (:func:`hermite_pieces`), flat (constant) beyond the first and last nodes. Node
  derivatives: the three-point (parabolic) estimate, exact for quadratics, limited by Hyman's
  (1983) filter to the Fritsch–Carlson monotonicity region |d| <= 3 min(|s-|, |s+|) where the
  data are monotone, and 0 at a local extremum of the data, so the interpolant is monotone
  wherever the data are and never overshoots them (noisy wing quotes cannot make it ring);
  one-sided three-point derivatives with the PCHIP end rule at the first and last nodes. Each
  piece is then checked at five points (u/h = 0, 1/4, 1/2, 3/4, 1) for w > 0 and an increasing
  implied map k(z) = z sqrt(w) - w/2 (+ w/2 for the gamma measure): no butterfly arbitrage; a
  piece failing either check is replaced by the linear one. If the linear piece fails too
  (the quotes themselves are at the edge of butterfly arbitrage between two nodes) it is kept
  and the lane's ``map_monotone`` flag is False (the status stays OK: the integral is still
  defined and finite). Interpolation error O(h^3) for smooth smiles (O(h^2) for linear); the
  integral's error falls like h^4 in the validation study (clean Heston chains, F = 2000:
  2.5e-8 / 1.5e-9 at strike spacing 50 / 25, against 3.2e-5 / 7.9e-6 for linear
  interpolation). Keeping the parabolic slope at data extrema instead of 0 changed the study's
  errors by < 4e-6, so the safer shape-preserving rule costs nothing measurable.
  ``interpolation="linear"`` keeps the piecewise-linear interpolant.
- Integration: exact to rounding, piece by piece (:func:`gaussian_integral_cubic`). Pieces at
  least 0.5 wide in z: the closed form (with phi' = -z phi, int (c0 + c1 u + c2 u^2 + c3 u^3)
  phi(z) dz over [z0, z1], u = z - z0, is A (Phi(z1) - Phi(z0)) - [q(u) phi(z)] with a
  quadratic q and constant A found by matching coefficients). Narrower pieces: 8-point
  Gauss–Legendre, because the closed form cancels catastrophically there (its terms grow like
  c3 ~ 1/h^2) while phi is nearly polynomial over the piece (error < 1e-13 relative). The flat
  tails give w_first Phi(z_first) + w_last Phi(-z_last). Fixed work per lane (no sort;
  Gauss–Hermite over the whole line would need many nodes for a function that is only C1 and
  flat beyond the data).
- Bad or missing quotes are dropped node by node (no bid, failed inversion, non-monotone z);
  a lane reports a :class:`VxjStatus`, never raises: BAD_INPUT (no parity forward, bad time),
  TOO_FEW_NODES (< 2 kept nodes), NON_FINITE. Two kept nodes give a linear interpolant.
- For a smooth smile (a fitted SVI/SSVI/SABR, any jax function k -> w(k)) use
  :func:`smile_variance`: Gauss–Hermite quadrature in z, with g(z) found by a fixed number of
  bisection steps plus one Newton step that carries the implicit derivative.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
import numpy as np
from jax.scipy.special import ndtr

from jaxvol.indices import cboe
from jaxvol.status import domain_status
from jaxvol.indices.term import MINUTES_30_DAYS, MINUTES_PER_YEAR, interpolate_variance
from jaxvol.indices.term import variance_to_index

__all__ = ["VxjStatus", "VxjTerm", "VxjBatch", "HermitePieces", "hermite_pieces",
           "gaussian_integral_cubic", "gaussian_integral", "interpolated_total_variance",
           "vxj_variance_from_prices", "vxj_variance", "vxj_index_batch", "VxjIndex",
           "vxj_index", "smile_variance"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MEASURE_SIGN = {"variance": 1.0, "gamma": -1.0}   # z = -d2 (variance) or z = -d1 (gamma swap)


VxjStatus = domain_status("VxjStatus", "indices", {
    "OK": 0,
    "BAD_INPUT": 1,        # non-positive/non-finite expiry, forward or discount
    "NON_FINITE": 3,       # the integral is not finite
    "TOO_FEW_POINTS": 4,   # fewer than two usable implied-vol nodes (old name TOO_FEW_NODES)
    "ARBITRAGE": 9,        # the screened quotes still hold a vertical-spread arbitrage
}, "Per-lane outcome of the VXJ computation (codes: jaxvol.status).",
    aliases={"TOO_FEW_NODES": "TOO_FEW_POINTS"})


class VxjTerm(NamedTuple):
    """One expiry of the VXJ computation (node arrays sorted by strike, padding last)."""

    variance: jax.Array        # [...] annualised model-free variance (or gamma-swap variance)
    total_variance: jax.Array  # [...] variance * expiry
    forward: jax.Array         # [...]
    expiry: jax.Array          # [...] years
    strike: jax.Array          # [..., strikes] sorted strikes (padding: +inf)
    z: jax.Array               # [..., strikes] node coordinate -d2 (or -d1)
    node_variance: jax.Array   # [..., strikes] total implied variance at the node
    node_used: jax.Array       # [..., strikes] bool, node kept for the integral
    status: jax.Array          # [...] int32 VxjStatus
    map_monotone: jax.Array    # [...] bool: every piece passed the five-point no-arbitrage check
    excluded: jax.Array = 0    # [...] int32 quotes the screen left out (raw-quote entry only)


class VxjBatch(NamedTuple):
    """VXJ index of many underlyings from two terms (near, next)."""

    index: jax.Array
    variance: jax.Array          # [..., 2]
    target_variance: jax.Array   # [...]
    forward: jax.Array           # [..., 2]
    status: jax.Array            # [...] worst VxjStatus of the two terms
    terms: VxjTerm
    excluded: jax.Array = 0      # [...] int32 quotes the screen left out, both terms


def _check_measure(measure):
    if measure not in _MEASURE_SIGN:
        raise ValueError(f"measure={measure!r}; expected one of {tuple(_MEASURE_SIGN)}")
    return _MEASURE_SIGN[measure]


def _check_interpolation(interpolation):
    if interpolation not in ("cubic", "linear"):
        raise ValueError(f"interpolation={interpolation!r}; expected 'cubic' or 'linear'")


def _norm_pdf(z):
    return jnp.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _normal_mass(lower, upper):
    """Phi(upper) - Phi(lower) without cancellation in the upper tail."""
    upper_tail = lower > 0
    return jnp.where(upper_tail, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))


def _monotone_nodes(z, usable):
    """Keep a node only if its z exceeds every kept z at lower strikes (monotone z-map)."""
    running = jax.lax.cummax(jnp.where(usable, z, -jnp.inf))
    previous = jnp.concatenate([jnp.full((1,), -jnp.inf, z.dtype), running[:-1]])
    return usable & (z > previous)


def _neighbours(keep):
    """Index of the previous and next kept node of every node (-1 / n where there is none)."""
    n = keep.shape[-1]
    position = jnp.arange(n, dtype=jnp.int32)
    at_kept = jnp.where(keep, position, n)
    following = jnp.concatenate([jax.lax.cummin(at_kept, reverse=True)[1:],
                                 jnp.full((1,), n, jnp.int32)])
    at_kept = jnp.where(keep, position, -1)
    preceding = jnp.concatenate([jnp.full((1,), -1, jnp.int32), jax.lax.cummax(at_kept)[:-1]])
    return preceding, following


def _slope(z, w, i, j):
    """Secant slope between nodes i and j; indices already clipped.

    0 where the nodes coincide, and exactly 0 (with zero gradient) where the two values differ
    by rounding only (64 ulps): a flat smile is then flat to the limiter too, so its
    sign tests do not act on rounding noise (which would give meaningless gradients).
    """
    width = z[j] - z[i]
    rise = w[j] - w[i]
    scale = jnp.maximum(jnp.abs(w[i]), jnp.abs(w[j]))
    ok = (width > 0) & (jnp.abs(rise) > 64.0 * jnp.finfo(w.dtype).eps * scale)
    return jnp.where(ok, rise / jnp.where(ok, width, 1.0), 0.0), width


def _node_derivatives(z, w, keep):
    """dw/dz at every kept node: three-point (parabolic) estimate, Hyman-limited.

    Interior node with secants s- and s+ over widths h- and h+: p = (h+ s- + h- s+)/(h- + h+),
    exact for quadratics. Where the data are monotone (s- s+ > 0) the derivative is limited to
    the Fritsch–Carlson region |d| <= 3 min(|s-|, |s+|) (Hyman 1983), which makes every such
    piece monotone; at a local extremum of the data (s- s+ <= 0) it is 0, so the interpolant
    does not overshoot the data. End nodes: the one-sided three-point formula with the PCHIP
    end rule (0 if its sign differs from the end secant; 3 s if it exceeds 3 s where the data
    turn); a lane with two nodes is linear.
    """
    n = z.shape[-1]
    preceding, following = _neighbours(keep)
    prev_ok, next_ok = preceding >= 0, following < n
    prev_i, next_i = jnp.maximum(preceding, 0), jnp.minimum(following, n - 1)
    position = jnp.arange(n, dtype=jnp.int32)
    s_prev, h_prev = _slope(z, w, prev_i, position)
    s_next, h_next = _slope(z, w, position, next_i)
    # interior: parabolic estimate, limited where monotone, zero at an extremum
    total = h_prev + h_next
    parabola = (h_next * s_prev + h_prev * s_next) / jnp.where(total > 0, total, 1.0)
    bound = 3.0 * jnp.minimum(jnp.abs(s_prev), jnp.abs(s_next))
    monotone = s_prev * s_next > 0
    interior = jnp.where(monotone, jnp.sign(parabola) * jnp.minimum(jnp.abs(parabola), bound),
                         0.0)
    # ends: one-sided three-point estimate from the two secants on the inside
    def end(s_near, h_near, s_far, h_far, has_far):
        span = h_near + h_far
        d = ((2.0 * h_near + h_far) * s_near - h_near * s_far) / jnp.where(span > 0, span, 1.0)
        d = jnp.where(jnp.sign(d) != jnp.sign(s_near), 0.0, d)
        turn = (jnp.sign(s_near) != jnp.sign(s_far)) & (jnp.abs(d) > 3.0 * jnp.abs(s_near))
        d = jnp.where(turn, 3.0 * s_near, d)
        return jnp.where(has_far, d, s_near)

    far_next = following[next_i]          # second kept node to the right of a first node
    s_far, h_far = _slope(z, w, next_i, jnp.minimum(far_next, n - 1))
    first = end(s_next, h_next, s_far, h_far, far_next < n)
    far_prev = preceding[prev_i]          # second kept node to the left of a last node
    s_farp, h_farp = _slope(z, w, jnp.maximum(far_prev, 0), prev_i)
    last = end(s_prev, h_prev, s_farp, h_farp, far_prev >= 0)
    d = jnp.where(prev_ok & next_ok, interior, jnp.where(next_ok, first, last))
    return jnp.where(keep & (prev_ok | next_ok), d, 0.0), following


class HermitePieces(NamedTuple):
    """Piece starting at each node, w(z) = c0 + c1 u + c2 u^2 + c3 u^3 with u = z - z0."""

    z0: jax.Array
    z1: jax.Array
    c0: jax.Array
    c1: jax.Array
    c2: jax.Array
    c3: jax.Array
    active: jax.Array   # bool: a kept node with a kept successor at a larger z
    cubic: jax.Array    # bool: the C1 cubic passed the checks (else the piece is linear)
    checked: jax.Array  # bool: the piece used passed the checks (w > 0, k(z) increasing)


def _log_moneyness_slope(z, w, dw, sign):
    """dk/dz of the implied map k = z sqrt(w) - sign w / 2 (must be > 0: no arbitrage)."""
    root = jnp.sqrt(jnp.maximum(w, jnp.finfo(w.dtype).tiny))
    return root + dw * (0.5 * z / root - 0.5 * sign)


def hermite_pieces(z, w, keep, *, sign=1.0, interpolation="cubic"):
    """The interpolant of total variance ``w`` in ``z`` between kept nodes, as pieces.

    ``interpolation="cubic"``: C1 piecewise cubic Hermite with the node derivatives of
    :func:`_node_derivatives`. A piece is kept cubic only if, at u/h = 0, 1/4, 1/2, 3/4, 1, the
    variance is positive and the implied map k(z) is increasing (dk/dz > 0); otherwise that
    piece is the linear one (continuous, not C1 at its ends). ``"linear"``: every piece linear.
    ``checked`` says whether the piece used passed the same five-point check. ``sign`` is +1
    for z = -d2, -1 for z = -d1.
    """
    n = z.shape[-1]
    if interpolation == "cubic":
        d, following = _node_derivatives(z, w, keep)
    else:
        _check_interpolation(interpolation)
        d, following = jnp.zeros_like(w), _neighbours(keep)[1]
    nxt = jnp.minimum(following, n - 1)
    z0, z1, w0, w1, d0, d1 = z, z[nxt], w, w[nxt], d, d[nxt]
    active = keep & (following < n) & (z1 > z0)
    width = jnp.where(active, z1 - z0, 1.0)
    secant = jnp.where(active, (w1 - w0) / width, 0.0)
    c2 = (3.0 * secant - 2.0 * d0 - d1) / width
    c3 = (d0 + d1 - 2.0 * secant) / (width * width)

    def passes(c1, c2, c3):
        ok = active
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            u = t * width
            value = w0 + u * (c1 + u * (c2 + u * c3))
            slope = c1 + u * (2.0 * c2 + 3.0 * u * c3)
            ok = ok & (value > 0) & (_log_moneyness_slope(z0 + u, value, slope, sign) > 0)
        return ok

    cubic = passes(d0, c2, c3) & (interpolation == "cubic")
    c1 = jnp.where(cubic, d0, secant)
    c2 = jnp.where(cubic, c2, 0.0)
    c3 = jnp.where(cubic, c3, 0.0)
    checked = cubic | passes(secant, 0.0, 0.0)
    return HermitePieces(z0, jnp.where(active, z1, z0), w0, c1, c2, c3, active, cubic,
                         checked)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_NARROW = 0.5   # pieces narrower than this (in z) use Gauss–Legendre, wider the closed form


def _closed_form_cubic(z0, z1, c0, c1, c2, c3):
    """int_{z0}^{z1} (c0 + c1 u + c2 u^2 + c3 u^3) phi(z) dz in closed form (u = z - z0)."""
    q2 = c3
    q1 = c2 - z0 * q2
    q0 = c1 - z0 * q1 + 2.0 * q2
    constant = c0 - z0 * q0 + q1
    h = z1 - z0
    return (constant * _normal_mass(z0, z1) - (q0 + h * (q1 + h * q2)) * _norm_pdf(z1)
            + q0 * _norm_pdf(z0))


def _gauss_legendre_cubic(z0, z1, c0, c1, c2, c3):
    """The same integral by 8-point Gauss–Legendre in t = u/h, with the scaled coefficients
    c1 h, c2 h^2, c3 h^3 (bounded by the data even where c3 ~ 1/h^2)."""
    h = z1 - z0
    b1, b2, b3 = c1 * h, c2 * h * h, c3 * h * h * h
    total = 0.0
    for node, weight in zip(_GL_NODES.tolist(), _GL_WEIGHTS.tolist()):
        t = 0.5 * (node + 1.0)
        total = total + weight * (c0 + t * (b1 + t * (b2 + t * b3))) * _norm_pdf(z0 + t * h)
    return 0.5 * h * total


def gaussian_integral_cubic(z0, z1, c0, c1, c2, c3, *, method="auto"):
    """int_{z0}^{z1} (c0 + c1 u + c2 u^2 + c3 u^3) phi(z) dz, u = z - z0 (elementwise).

    Closed form: with phi' = -z phi, d/dz[-q(u) phi(z)] = (z q(u) - q'(u)) phi(z), so for the
    quadratic q = q0 + q1 u + q2 u^2 with q2 = c3, q1 = c2 - z0 q2, q0 = c1 - z0 q1 + 2 q2 and
    the constant A = c0 - z0 q0 + q1, the integral is
    A (Phi(z1) - Phi(z0)) - q(z1 - z0) phi(z1) + q0 phi(z0).

    Its rounding error grows like eps c3 (2 + |z0|)^3 times the piece's mass, and an
    interpolating cubic on a piece of width h has c3 ~ 1/h^2: measured 1e-9 relative at
    h = 0.01 and useless at h = 1e-4 (nodes a few ulps of strike apart in z happen in noisy
    wings). So ``method="auto"`` (the default) uses it only for pieces at least 0.5 wide and
    8-point Gauss–Legendre below, whose error there is below 1e-13 relative (phi varies
    slowly over such a piece: measured <= 5e-14 for |z0| <= 8; the closed form at h = 0.5,
    z0 = -8: 5e-12). ``method="closed"``: the closed form everywhere.
    """
    closed = _closed_form_cubic(z0, z1, c0, c1, c2, c3)
    if method == "closed":
        return closed
    if method != "auto":
        raise ValueError(f"method={method!r}; expected 'auto' or 'closed'")
    narrow = (z1 - z0) < _NARROW
    return jnp.where(narrow, _gauss_legendre_cubic(z0, z1, c0, c1, c2, c3), closed)


def gaussian_integral(z, w, keep, *, sign=1.0, interpolation="cubic"):
    """Exact int w(z) phi(z) dz for the interpolant of :func:`hermite_pieces`, flat outside.

    ``z``, ``w``, ``keep`` are 1-D with kept ``z`` increasing in array order (no sort: each
    kept node owns the piece up to the next kept node). Returns (integral, kept-node count,
    whether every piece passed the five-point check of :func:`hermite_pieces`).
    """
    n = z.shape[-1]
    pieces = hermite_pieces(z, w, keep, sign=sign, interpolation=interpolation)
    inner = gaussian_integral_cubic(pieces.z0, pieces.z1, pieces.c0, pieces.c1, pieces.c2,
                                    pieces.c3)
    position = jnp.arange(n, dtype=jnp.int32)
    count = jnp.sum(keep, dtype=jnp.int32)
    first = jnp.min(jnp.where(keep, position, n - 1))
    last = jnp.max(jnp.where(keep, position, 0))
    tails = w[first] * ndtr(z[first]) + w[last] * ndtr(-z[last])
    checked = jnp.all(pieces.checked | ~pieces.active)
    return tails + jnp.sum(jnp.where(pieces.active, inner, 0.0)), count, checked


def interpolated_total_variance(z_query, z, w, keep, *, sign=1.0, interpolation="cubic"):
    """The interpolant the integral uses at a scalar ``z_query`` (flat outside the nodes)."""
    n = z.shape[-1]
    pieces = hermite_pieces(z, w, keep, sign=sign, interpolation=interpolation)
    position = jnp.arange(n, dtype=jnp.int32)
    first = jnp.min(jnp.where(keep, position, n - 1))
    last = jnp.max(jnp.where(keep, position, 0))
    inside = jnp.clip(z_query, z[first], z[last])
    owner = jnp.max(jnp.where(pieces.active & (z <= inside), position, -1))
    at_end = owner < 0
    owner = jnp.where(at_end, last, owner)
    u = jnp.where(at_end | ~pieces.active[owner], 0.0, inside - pieces.z0[owner])
    value = pieces.c0[owner] + u * (pieces.c1[owner] + u * (pieces.c2[owner]
                                                              + u * pieces.c3[owner]))
    return jnp.where(z_query <= z[first], w[first], value)


def _safe_inputs(forward, expiry, discount):
    """Scalar inputs of a lane, replaced by harmless values where bad (double where)."""
    ok = (expiry > 0) & (forward > 0) & (discount > 0)
    ok = ok & jnp.isfinite(expiry) & jnp.isfinite(forward) & jnp.isfinite(discount)
    return (ok, jnp.where(ok, forward, 1.0), jnp.where(ok, expiry, 1.0),
            jnp.where(ok, discount, 1.0))


def _implied_total_variance(strike, price, is_call, usable, forward, expiry, discount):
    """Total implied variance of every node of a batch ``[..., strikes]`` (scalars ``[...]``).

    The foundation inverter is elementwise, so it runs on the whole batch at once (not inside
    the per-lane vmap, where XLA fuses it less well: measured 1.8x slower on CPU).
    """
    from jaxvol.implied import implied_vol  # the foundation inverter (late: acyclic import)

    ok, forward, expiry, discount = _safe_inputs(forward, expiry, discount)
    forward, expiry, discount = forward[..., None], expiry[..., None], discount[..., None]
    usable = usable & ok[..., None]
    # padded / unusable entries get a harmless at-the-money option at 20 % vol
    safe_strike = jnp.where(usable, strike, forward)
    atm_price = discount * forward * 0.2 * jnp.sqrt(expiry) * _INV_SQRT_2PI
    safe_price = jnp.where(usable, price, atm_price)
    solved = implied_vol(safe_price, forward, safe_strike, expiry, is_call, discount=discount)
    vol_ok = usable & (solved.status == 0) & jnp.isfinite(solved.vol) & (solved.vol > 0)
    total = jnp.where(vol_ok, solved.vol, 0.2) ** 2 * expiry
    return jnp.log(safe_strike / forward), total, vol_ok


def _integral_lane(log_moneyness, total, vol_ok, forward, expiry, discount, sign,
                   interpolation):
    """One lane: nodes (k, w) at sorted strikes -> (variance, total, z, keep, status)."""
    inputs_ok, _, safe_expiry, _ = _safe_inputs(forward, expiry, discount)
    z = (log_moneyness + sign * 0.5 * total) / jnp.sqrt(total)
    keep = _monotone_nodes(z, vol_ok)
    integral, count, checked = gaussian_integral(z, total, keep, sign=sign,
                                                 interpolation=interpolation)
    status = jnp.where(jnp.isfinite(integral), VxjStatus.OK, VxjStatus.NON_FINITE)
    status = jnp.where(count >= 2, status, VxjStatus.TOO_FEW_NODES)
    status = jnp.where(inputs_ok, status, VxjStatus.BAD_INPUT).astype(jnp.int32)
    integral = jnp.where(status == VxjStatus.OK, integral, jnp.nan)
    return integral / safe_expiry, integral, z, keep, status, checked & (status == 0)


def _vxj_pipeline(strike, price, is_call, usable, forward, expiry, discount, sign,
                  interpolation):
    """Inversion on the whole batch, then the per-lane integral (vmapped)."""
    log_moneyness, total, vol_ok = _implied_total_variance(strike, price, is_call, usable,
                                                           forward, expiry, discount)
    lane = functools.partial(_integral_lane, sign=sign, interpolation=interpolation)
    variance, integral, z, keep, status, checked = jnp.vectorize(
        lane, signature="(n),(n),(n),(),(),()->(),(),(n),(n),(),()")(
            log_moneyness, total, vol_ok, forward, expiry, discount)
    return VxjTerm(variance, integral, forward, expiry, strike, z, total, keep, status, checked,
                   jnp.zeros(status.shape, jnp.int32))  # excluded: set by the quote screen


def _otm_quotes_lane(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate,
                     presorted=False):
    """One term of one underlying: Cboe parity forward, out-of-the-money mids with a bid."""
    strike, mask, call_bid, call_ask, put_bid, put_ask = cboe._sort_by_strike(
        strike, mask, call_bid, call_ask, put_bid, put_ask, presorted=presorted)
    time_ok = (minutes > 0) & jnp.isfinite(rate)
    expiry = jnp.where(time_ok, minutes, jnp.nan) / MINUTES_PER_YEAR
    safe_expiry = jnp.where(time_ok, expiry, 1.0)
    growth = jnp.exp(jnp.where(time_ok, rate, 0.0) * safe_expiry)
    call_mid, put_mid = cboe._mid(call_bid, call_ask), cboe._mid(put_bid, put_ask)
    candidate = mask & cboe._has_bid(call_bid) & cboe._has_bid(put_bid)
    candidate = candidate & jnp.isfinite(call_mid) & jnp.isfinite(put_mid)
    forward = cboe._forward(strike, call_mid, put_mid, candidate, growth, cboe.CBOE_RULES)
    forward = jnp.where(jnp.any(candidate), forward, jnp.nan)
    is_call = strike >= forward
    price = jnp.where(is_call, call_mid, put_mid)
    usable = mask & jnp.where(is_call, cboe._has_bid(call_bid), cboe._has_bid(put_bid))
    return strike, price, is_call, usable, forward, expiry, 1.0 / growth


def _cast(dtype, *arrays):
    return [jnp.asarray(a).astype(dtype) for a in arrays]


@functools.partial(jax.jit, static_argnames=("measure", "presorted", "interpolation"))
def vxj_variance_from_prices(strike, price, is_call, mask, forward, expiry, discount=1.0, *,
                             measure="variance", presorted=False, interpolation="cubic"):
    """Model-free variance of padded out-of-the-money option prices (one expiry per lane).

    Args:
      strike, price: ``[..., strikes]`` discounted option prices; is_call: bool, same shape
        (use out-of-the-money options); mask: bool, False for padding or bad quotes.
      forward, expiry (years), discount: ``[...]``.
      measure: "variance" (z = -d2, the log contract / variance swap) or "gamma" (z = -d1,
        the gamma swap). presorted: strikes ascending, padding last (skips the sort).
      interpolation: "cubic" (the default, see the module docstring) or "linear" (the
        piecewise-linear interpolant, kept for comparison studies).

    Returns a :class:`VxjTerm` (``z``/``node_variance``/``node_used`` in sorted-strike order).
    """
    sign = _check_measure(measure)
    dtype = jnp.result_type(price)
    strike, price, forward, expiry, discount = _cast(dtype, strike, price, forward, expiry,
                                                     discount)
    is_call, mask = jnp.asarray(is_call, bool), jnp.asarray(mask, bool)
    forward, expiry, discount = jnp.broadcast_arrays(forward, expiry, discount,
                                                     jnp.zeros(strike.shape[:-1], dtype))[:3]
    sort = jnp.vectorize(functools.partial(cboe._sort_by_strike, presorted=presorted),
                         signature="(n),(n),(n),(n)->(n),(n),(n),(n)")
    strike, mask, price, is_call = sort(strike, mask, price, is_call)
    _check_interpolation(interpolation)
    return _vxj_pipeline(strike, price, is_call, mask, forward, expiry, discount, sign,
                         interpolation)


@functools.partial(jax.jit, static_argnames=("measure", "presorted", "interpolation", "screen"))
def vxj_variance(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                 measure="variance", presorted=False, interpolation="cubic",
                 screen=True) -> VxjTerm:
    """VXJ model-free variance of one term for a batch of padded quote chains.

    Same inputs as :func:`jaxvol.indices.cboe_variance` (``[..., strikes]`` quotes, ``[...]``
    minutes and continuous rates). The forward is Cboe's put–call-parity forward.
    ``presorted=True`` skips the per-lane sort (strikes ascending, padding last).
    ``interpolation``: "cubic" (default) or "linear", as in :func:`vxj_variance_from_prices`.
    ``screen``: the quote screen of :func:`jaxvol.indices.screen_quotes` first (default):
    crossed, negative, above-bound and repeated quotes are left out (``excluded``), and a term
    whose kept quotes hold a vertical-spread arbitrage gets status ARBITRAGE.
    """
    sign = _check_measure(measure)
    args = cboe._cast_inputs(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate)
    excluded = jnp.zeros(args[0].shape[:-1], jnp.int32)
    arbitrage = jnp.zeros(args[0].shape[:-1], bool)
    if screen:
        screened = cboe.screen_quotes(*args, presorted=presorted)
        args = (*screened[:6], args[6], args[7])
        excluded, arbitrage, presorted = screened.excluded, screened.arbitrage, True
    lane = functools.partial(_otm_quotes_lane, presorted=presorted)
    signature = "(n),(n),(n),(n),(n),(n),(),()->(n),(n),(n),(n),(),(),()"
    otm = jnp.vectorize(lane, signature=signature)(*args)
    _check_interpolation(interpolation)
    term = _vxj_pipeline(*otm, sign, interpolation)
    status = jnp.where((term.status == VxjStatus.OK) & arbitrage, VxjStatus.ARBITRAGE,
                       term.status).astype(jnp.int32)
    return term._replace(status=status, excluded=excluded)


@edge(static=("measure", "presorted", "interpolation", "screen"))
def vxj_index_batch(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                    target_minutes=MINUTES_30_DAYS, measure="variance",
                    presorted=False, interpolation="cubic", screen=True) -> VxjBatch:
    """VXJ index of many underlyings: inputs as :func:`jaxvol.indices.cboe_vix_batch`.

    Not jitted itself: the heavy part is the jitted :func:`vxj_variance`, whose compiled kernel
    is shared with every other caller of the same shape.
    """
    terms = vxj_variance(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate,
                         measure=measure, presorted=presorted, interpolation=interpolation,
                         screen=screen)
    minutes = jnp.asarray(minutes).astype(terms.variance.dtype)
    target = interpolate_variance(minutes[..., 0], terms.variance[..., 0], minutes[..., 1],
                                  terms.variance[..., 1], target_minutes)
    return VxjBatch(variance_to_index(target), terms.variance, target, terms.forward,
                    jnp.max(terms.status, axis=-1), terms, jnp.sum(terms.excluded, axis=-1))


@dataclasses.dataclass(frozen=True)
class VxjIndex:
    """Result of :func:`vxj_index` for one underlying."""

    index: float
    variance: np.ndarray
    target_variance: float
    forward: np.ndarray
    status: tuple
    excluded: tuple = (0, 0)   # quotes the screen left out (near, next)


def vxj_index(near, next, *, near_minutes, next_minutes, near_rate, next_rate,
              target_minutes=MINUTES_30_DAYS, screen=True) -> VxjIndex:
    """VXJ index of one underlying from near/next quote tables (same inputs as ``cboe_vix``)."""
    (strike, call_bid, call_ask, put_bid, put_ask), mask = cboe._pack_terms(
        [near, next], max(len(near), len(next)))
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    as_array = functools.partial(jnp.asarray, dtype=dtype)
    batch = vxj_index_batch(*map(as_array, (strike, call_bid, call_ask, put_bid, put_ask)), mask,
                            as_array([near_minutes, next_minutes]),
                            as_array([near_rate, next_rate]),
                            target_minutes=as_array(target_minutes), presorted=True,
                            screen=screen)
    return VxjIndex(float(batch.index), np.asarray(batch.variance),
                    float(batch.target_variance), np.asarray(batch.forward),
                    tuple(VxjStatus(int(s)) for s in np.asarray(batch.terms.status)),
                    tuple(int(e) for e in np.asarray(batch.terms.excluded)))


# ------------------------------------------------------------------ smooth smiles: Gauss–Hermite
def _solve_log_moneyness(total_variance_fn, z, sign, bracket, steps, args):
    """k with (k + sign w(k)/2)/sqrt(w(k)) = z: bisection (fixed steps) + one Newton step."""

    def gap(k):
        w = total_variance_fn(k, *args)
        return (k + sign * 0.5 * w) / jnp.sqrt(w) - z

    def halve(_, interval):
        low, high = interval
        middle = 0.5 * (low + high)
        above = jax.lax.stop_gradient(gap(middle)) > 0
        return jnp.where(above, low, middle), jnp.where(above, middle, high)

    low, high = jax.lax.fori_loop(0, steps, halve, (-bracket + 0.0 * z, bracket + 0.0 * z))
    root = jax.lax.stop_gradient(0.5 * (low + high))
    slope = jax.grad(gap)(root)
    return root - gap(root) / slope   # value unchanged to rounding, gradient = implicit one


def smile_variance(total_variance_fn, expiry, *args, order=128, measure="variance",
                   bracket=100.0, steps=80):
    """Model-free variance of a smooth smile by Gauss–Hermite quadrature in z.

    Args:
      total_variance_fn: ``w(k, *args)``, total implied variance at log-moneyness k = log(K/F)
        (a jax-traceable scalar function, e.g. an SVI slice). Must give an increasing z-map
        (no butterfly arbitrage).
      expiry: years (annualises the result); args: parameters passed to the function.
      order: Gauss–Hermite nodes (static). measure: "variance" (-d2) or "gamma" (-d1).
      bracket, steps: bisection interval [-bracket, bracket] in k and fixed step count.

    Returns the annualised variance (gamma-swap variance for ``measure="gamma"``). vmap it over
    slices; gradients w.r.t. ``args`` are exact (implicit through the inverse map).
    """
    sign = _check_measure(measure)
    dtype = jnp.result_type(expiry)
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    nodes = jnp.asarray(nodes, dtype)
    weights = jnp.asarray(weights / math.sqrt(2.0 * math.pi), dtype)
    solve = functools.partial(_solve_log_moneyness, total_variance_fn, sign=sign,
                              bracket=bracket, steps=steps, args=args)
    k = jax.vmap(solve)(nodes)
    w = jax.vmap(lambda kk: total_variance_fn(kk, *args))(k)
    return jnp.sum(weights * jnp.where(weights > 0, w, 0.0)) / expiry
