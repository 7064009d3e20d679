"""Market strangle to smile: :func:`calibrate_smile` for every pair and tenor at once.

FX brokers quote ATM, risk reversals and *market* (broker) strangles. The market strangle
``bf`` is one vol, ``atm + bf``, priced at the strikes that vol puts at +-25 delta; its premium
``ms_value`` is fixed by the quotes alone. A smile fits the quotes when

* its vol at the ATM strike is the ATM vol,
* its own 25-delta call vol minus its 25-delta put vol is the risk reversal, the 25-delta strikes
  being those whose delta, computed with the smile's vol there, is +-0.25,
* it prices the market-strangle strikes at ``ms_value``,

and likewise for the 10-delta pair when quoted. The smile's 25-delta strikes depend on its vols
and its vols on the strikes, so the strikes are unknowns of the fit next to the smile's
parameters: for every pillar the system has two delta equations and two quote equations. The
square systems (polynomial, vanna-volga, SABR with 25 delta only) are solved to machine
precision by the shared Levenberg-Marquardt engine :func:`jaxvol.calibrate.least_squares`; SABR
with 10-delta quotes has 3 parameters for 5 quotes and is a least-squares fit (``residuals``
report what is left). The *smile strangle* ``(vol25_call + vol25_put)/2 - atm`` depends on the
model and is reported per model.
"""

from __future__ import annotations

import enum
import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxvol._dtypes import as_float, float_dtype
from jaxvol.fx._math import norm_cdf, norm_pdf
from jaxvol.fx.conventions import (
    atm_log_moneyness, delta_from_moneyness, forward_rate_terms, is_premium_adjusted,
    max_delta_d2, parse_atm_type, parse_delta_type, strike_from_delta)
from jaxvol.fx.polynomial import polynomial_kernel
from jaxvol.fx.vannavolga import vanna_volga_kernel
from jaxvol.status import domain_status

__all__ = ["calibrate_smile", "parse_model", "PILLAR_DELTAS", "smile_vol", "SmileCalibration",
           "SmileModel", "SmileStatus"]

PILLAR_DELTAS = (0.25, 0.10)
_SABR_RHO_LIMIT = 0.9999


class SmileModel(enum.IntEnum):
    """Smile model fitted to the quotes."""

    POLYNOMIAL = 0  # Clark's quadratic (quartic with 10-delta quotes) in simple delta
    SABR = 1  # Hagan lognormal SABR with fixed beta (jaxvol.sabr)
    VANNA_VOLGA = 2  # Castagna-Mercurio, three pillars (25-delta quotes only)


SmileStatus = domain_status("SmileStatus", "fx", {
    "OK": 0,
    "BAD_INPUT": 1,  # spot, expiry or ATM vol not positive
    "NON_FINITE_INPUT": 2,  # a market input or quote is NaN/inf (old name MISSING_QUOTE)
    "NEGATIVE_VOL": 40,  # ATM + strangle <= 0, or the fitted smile has a non-positive pillar vol
    "NO_STRIKE_FOR_DELTA": 41,  # no (market-branch) strike for a pillar delta at the quoted vols
    "STRANGLE_TOO_LOW": 42,  # the model cannot price the market strangle that cheaply
    "FIT_FAILED": 43,  # the fit did not reach the quotes for another reason
    "SMILE_BREAKDOWN": 44,  # the smile is undefined at the quotes (e.g. vanna-volga square root)
}, "Per-row outcome of :func:`calibrate_smile` (values are NaN unless OK; codes: "
   "jaxvol.status).", aliases={"MISSING_QUOTE": "NON_FINITE_INPUT"})

#: statuses whose market strangle strikes are still reported (the quotes were usable)
_MS_REPORTED = (SmileStatus.OK, SmileStatus.NO_STRIKE_FOR_DELTA, SmileStatus.STRANGLE_TOO_LOW,
                SmileStatus.FIT_FAILED, SmileStatus.SMILE_BREAKDOWN)


def parse_model(value) -> SmileModel:
    if isinstance(value, SmileModel):
        return value
    if isinstance(value, str) and value.upper() in SmileModel.__members__:
        return SmileModel[value.upper()]
    raise ValueError(f"unknown model {value!r}; expected 'polynomial', 'sabr' or 'vanna_volga'")


class _Spec(NamedTuple):
    """Static description of one calibration (hashable: keys the compiled residual function)."""

    model: SmileModel
    delta_type: object
    pillars: int  # 1 (25 delta) or 2 (25 and 10 delta)
    sabr_beta: float
    vv_order: int

    @property
    def model_params(self) -> int:
        if self.model == SmileModel.POLYNOMIAL:
            return 1 + 2 * self.pillars
        return 3 if self.model == SmileModel.SABR else 2

    @property
    def exact(self) -> bool:
        """Square system: the quotes are matched exactly."""
        return self.model_params == 1 + 2 * self.pillars


class _Lane(NamedTuple):
    """Per-lane inputs of the fit (scalars, pillar vectors [n] and strike pairs [n, 2])."""

    forward: jax.Array
    foreign_df: jax.Array
    expiry: jax.Array
    atm: jax.Array
    atm_y: jax.Array  # ln(K_ATM / F)
    rr: jax.Array  # [n]
    ms_y: jax.Array  # [n, 2] ln(K/F) of the market-strangle (call, put) strikes
    ms_value: jax.Array  # [n] undiscounted market-strangle premium (domestic per foreign)
    ms_vega: jax.Array  # [n] undiscounted vega of the market strangle at the single vol


def _black(forward, y, std_dev, phi):
    """Undiscounted Black price at log-moneyness y = ln(K/F)."""
    d1 = -y / std_dev + 0.5 * std_dev
    return phi * forward * (norm_cdf(phi * d1) - jnp.exp(y) * norm_cdf(phi * (d1 - std_dev)))


# ----------------------------------------------------------------------------- models


def smile_vol(spec: _Spec, params, y, lane: _Lane):
    """The fitted smile's vol at log-moneyness ``y`` for one lane."""
    model_params, pillar_ys = params[:spec.model_params], params[spec.model_params:]
    if spec.model == SmileModel.POLYNOMIAL:
        return polynomial_kernel(y, model_params, lane.atm * jnp.sqrt(lane.expiry))
    if spec.model == SmileModel.SABR:
        from jaxvol.smile import sabr  # the smile issue's module, imported when SABR is used

        alpha, rho, nu = model_params[0], model_params[1], model_params[2]
        return sabr.implied_vol(lane.forward, lane.forward * jnp.exp(y), lane.expiry, alpha,
                                spec.sabr_beta, rho, nu)
    ys = jnp.stack([pillar_ys[1], lane.atm_y, pillar_ys[0]])
    vols = jnp.stack([model_params[1], lane.atm, model_params[0]])
    return vanna_volga_kernel(y, ys, vols, lane.expiry, order=spec.vv_order)


def _initial_model_params(spec: _Spec, lane: _Lane, bf25):
    atm = lane.atm
    if spec.model == SmileModel.POLYNOMIAL:
        zeros = [jnp.zeros_like(atm)] * (spec.model_params - 1)
        return jnp.stack([jnp.log(atm)] + zeros)
    if spec.model == SmileModel.SABR:
        alpha = atm * lane.forward ** (1.0 - spec.sabr_beta)
        rho = jnp.clip(lane.rr[0] / jnp.maximum(4.0 * jnp.abs(bf25) + jnp.abs(lane.rr[0]), 1e-4),
                       -0.5, 0.5)
        return jnp.stack([alpha, rho, jnp.full_like(atm, 0.8)])
    return jnp.stack([atm + bf25 + 0.5 * lane.rr[0], atm + bf25 - 0.5 * lane.rr[0]])


def _model_bounds(spec: _Spec):
    inf = float("inf")
    if spec.model == SmileModel.SABR:
        lower, upper = [0.0, -_SABR_RHO_LIMIT, 0.0], [inf, _SABR_RHO_LIMIT, inf]
    elif spec.model == SmileModel.VANNA_VOLGA:
        lower, upper = [0.0, 0.0], [inf, inf]
    else:
        lower, upper = [-inf] * spec.model_params, [inf] * spec.model_params
    free = 2 * spec.pillars
    return lower + [-inf] * free, upper + [inf] * free


# -------------------------------------------------------------------------- residuals


def _pillar_residuals(spec: _Spec, params, lane: _Lane, pillar: int):
    vol = functools.partial(smile_vol, spec, params, lane=lane)
    sqrt_t = jnp.sqrt(lane.expiry)
    y_call, y_put = params[spec.model_params + 2 * pillar], params[spec.model_params + 2 * pillar + 1]
    vol_call, vol_put = vol(y_call), vol(y_put)
    ms_call, ms_put = lane.ms_y[pillar, 0], lane.ms_y[pillar, 1]
    strangle = (_black(lane.forward, ms_call, vol(ms_call) * sqrt_t, 1.0)
                + _black(lane.forward, ms_put, vol(ms_put) * sqrt_t, -1.0))
    target = PILLAR_DELTAS[pillar]
    delta = functools.partial(delta_from_moneyness, foreign_df=lane.foreign_df,
                              delta_type=spec.delta_type)
    return [vol_call - vol_put - lane.rr[pillar],
            (strangle - lane.ms_value[pillar]) / lane.ms_vega[pillar],
            delta(y_call, vol_call * sqrt_t, 1.0) - target,
            delta(y_put, vol_put * sqrt_t, -1.0) + target]


@functools.lru_cache(maxsize=None)
def _residual_fn(spec: _Spec):
    """One module-level-stable residual function per static spec (the engine's jit key)."""

    def residuals(params, lane: _Lane):
        out = [smile_vol(spec, params, lane.atm_y, lane) - lane.atm]
        for pillar in range(spec.pillars):
            out += _pillar_residuals(spec, params, lane, pillar)
        return jnp.stack(out)

    return residuals


# ------------------------------------------------------------------------------ result


class SmileCalibration(eqx.Module):
    """Batched result of :func:`calibrate_smile` (leading axes: the broadcast input shape).

    Strike/vol pairs are ``[..., 2]`` ordered (call, put). Premiums are domestic per unit of
    foreign, discounted to delivery. The 10-delta fields are None unless 10-delta quotes were
    given. ``params`` [..., P] are the model parameters (polynomial: ln-vol coefficients lowest
    order first; SABR: alpha, rho, nu; vanna-volga: 25-delta call and put vols). ``residuals``
    are the fit residuals (vol units for ATM/RR, vol units via the strangle vega for the
    strangle, delta units for the pillar deltas). ``loss``, ``iterations`` and ``rmse`` (of the
    residuals) are the fit's, as in every jaxvol fit result (NaN unless OK).
    """

    forward: jax.Array
    k_atm: jax.Array
    ms_strikes: jax.Array
    ms_value: jax.Array
    smile_strangle: jax.Array
    k25: jax.Array
    vol25: jax.Array
    params: jax.Array
    residuals: jax.Array
    status: jax.Array
    expiry: jax.Array
    atm: jax.Array
    loss: jax.Array
    iterations: jax.Array
    rmse: jax.Array
    ms10_strikes: jax.Array | None = None
    ms10_value: jax.Array | None = None
    smile_strangle10: jax.Array | None = None
    k10: jax.Array | None = None
    vol10: jax.Array | None = None
    model: SmileModel = eqx.field(static=True, default=SmileModel.POLYNOMIAL)
    delta_type: object = eqx.field(static=True, default=None)
    sabr_beta: float = eqx.field(static=True, default=1.0)
    vv_order: int = eqx.field(static=True, default=2)

    @property
    def spec(self) -> _Spec:
        return _Spec(self.model, self.delta_type, 1 if self.k10 is None else 2, self.sabr_beta,
                     self.vv_order)

    def vol(self, strike):
        """Fitted smile vol at ``strike`` [..., n] (batch axes as the result's); NaN unless OK."""
        pillars = [self.k25] + ([] if self.k10 is None else [self.k10])
        return _smile_vols(self.spec, self.params, jnp.asarray(strike, self.forward.dtype),
                           self.forward, self.expiry, self.atm, self.k_atm,
                           jnp.concatenate(pillars, axis=-1))


@functools.partial(jax.jit, static_argnums=0)
def _smile_vols(spec, params, strike, forward, expiry, atm, k_atm, pillar_strikes):
    y = jnp.log(strike / forward[..., None])
    pillar_ys = jnp.log(pillar_strikes / forward[..., None])
    fn = jnp.vectorize(functools.partial(_lane_vol, spec),
                       signature="(p),(n),(),(),(),(),(k)->(n)")
    return fn(params, y, forward, expiry, atm, jnp.log(k_atm / forward), pillar_ys)


def _lane_vol(spec, params, ys, forward, expiry, atm, atm_y, pillar_ys):
    full = jnp.concatenate([params[:spec.model_params], pillar_ys])
    lane = _Lane(forward, forward, expiry, atm, atm_y, None, None, None, None)
    return jax.vmap(lambda y: smile_vol(spec, full, y, lane))(ys)


# ---------------------------------------------------------------------- preprocessing


class _Market(NamedTuple):
    forward: jax.Array
    domestic_df: jax.Array
    foreign_df: jax.Array
    std_atm: jax.Array
    atm_y: jax.Array


def _market(spot, expiry, rd, rf, delivery, atm, atm_type):
    forward, domestic_df, foreign_df = forward_rate_terms(spot, rd, rf, delivery)
    std_atm = atm * jnp.sqrt(expiry)
    atm_y = atm_log_moneyness(std_atm, atm_type=atm_type,
                              log_spot_over_forward=jnp.log(spot / forward))
    return _Market(forward, domestic_df, foreign_df, std_atm, atm_y)


def _market_strangle(market, spot, expiry, rd, rf, delivery, vol, target, delta_type):
    """(call, put) log-moneyness at +-target delta with the single vol, premium and vega."""
    kwargs = dict(spot=spot, expiry=expiry, vol=vol, rd=rd, rf=rf, delta_type=delta_type,
                  delivery=delivery)
    call = strike_from_delta(target, is_call=True, **kwargs).strike
    put = strike_from_delta(-target, is_call=False, **kwargs).strike
    ys = jnp.stack([jnp.log(call / market.forward), jnp.log(put / market.forward)], axis=-1)
    std_dev = vol * jnp.sqrt(expiry)
    value = (_black(market.forward, ys[..., 0], std_dev, 1.0)
             + _black(market.forward, ys[..., 1], std_dev, -1.0))
    d1 = -ys / std_dev[..., None] + 0.5 * std_dev[..., None]
    vega = market.forward * jnp.sqrt(expiry) * jnp.sum(norm_pdf(d1), axis=-1)
    return ys, value, vega


_SAFE_QUOTE = dict(spot=1.0, expiry=1.0, rd=0.0, rf=0.0, delivery=1.0, atm=0.1, rr25=0.0,
                   bf25=0.005, rr10=0.0, bf10=0.015)


def _exactness_tolerance(dtype):
    """Max |residual| of an exact fit that still counts as matched: 1e-8 in float64 (fits reach
    ~1e-15; the bound leaves room for badly scaled tenors), 1e3 eps in float32."""
    return max(1e-8, 1e3 * float(jnp.finfo(dtype).eps))


# ------------------------------------------------------------------------- calibration


_INPUT_NAMES = ("spot", "expiry", "rd", "rf", "delivery", "atm", "rr25", "bf25", "rr10", "bf10")


def _screen(inputs, pillars):
    """Stage-one status from the quotes alone, before any strike is computed."""
    names = _INPUT_NAMES[:8] if pillars == 1 else _INPUT_NAMES
    finite = functools.reduce(jnp.logical_and, [jnp.isfinite(inputs[n]) for n in names])
    positive = (inputs["spot"] > 0) & (inputs["expiry"] > 0) & (inputs["atm"] > 0)
    positive &= inputs["delivery"] >= 0
    ms_positive = inputs["atm"] + inputs["bf25"] > 0
    if pillars == 2:
        ms_positive &= inputs["atm"] + inputs["bf10"] > 0
    status = jnp.where(ms_positive, SmileStatus.OK, SmileStatus.NEGATIVE_VOL)
    status = jnp.where(positive, status, SmileStatus.BAD_INPUT)
    return jnp.where(finite, status, SmileStatus.MISSING_QUOTE).astype(jnp.int32)


def _prepare(inputs, spec: _Spec, atm_type):
    """Market terms, market strangles and the per-lane fit inputs for (masked) quotes."""
    q = inputs
    market = _market(q["spot"], q["expiry"], q["rd"], q["rf"], q["delivery"], q["atm"], atm_type)
    ms = [_market_strangle(market, q["spot"], q["expiry"], q["rd"], q["rf"], q["delivery"],
                           q["atm"] + q[f"bf{tag}"], delta, spec.delta_type)
          for tag, delta in zip(("25", "10")[:spec.pillars], PILLAR_DELTAS)]
    rr = jnp.stack([q[f"rr{tag}"] for tag in ("25", "10")[:spec.pillars]], axis=-1)
    lane = _Lane(market.forward, market.foreign_df, q["expiry"], q["atm"], market.atm_y, rr,
                 jnp.stack([m[0] for m in ms], axis=-2), jnp.stack([m[1] for m in ms], axis=-1),
                 jnp.stack([m[2] for m in ms], axis=-1))
    return market, lane


def _below_convexity_bound(lane: _Lane):
    """Market strangle cheaper than any arbitrage-free smile through the ATM quote can price.

    Call prices fall with slope >= -1 (undiscounted) and put prices rise with slope <= 1, so
    C(Kc) >= C(K_ATM) - max(Kc - K_ATM, 0) and P(Kp) >= P(K_ATM) - max(K_ATM - Kp, 0).
    """
    std_atm = lane.atm * jnp.sqrt(lane.expiry)
    straddle = (_black(lane.forward, lane.atm_y, std_atm, 1.0)
                + _black(lane.forward, lane.atm_y, std_atm, -1.0))
    k_atm = lane.forward * jnp.exp(lane.atm_y)
    strikes = lane.forward[:, None, None] * jnp.exp(lane.ms_y)
    bound = (straddle[:, None] - jnp.maximum(strikes[..., 0] - k_atm[:, None], 0.0)
             - jnp.maximum(k_atm[:, None] - strikes[..., 1], 0.0))
    return jnp.any(lane.ms_value < bound, axis=-1)


def _masked(inputs, good):
    return {n: jnp.where(good, v, jnp.asarray(_SAFE_QUOTE[n], v.dtype)) for n, v in inputs.items()}


def _fit(spec: _Spec, lane: _Lane, bf25, config, initial=None):
    from jaxvol.calibrate import LMConfig, least_squares

    model0 = jax.vmap(lambda ln, b: _initial_model_params(spec, ln, b))(lane, bf25)
    if initial is not None:  # warm start where finite
        model0 = jnp.where(jnp.all(jnp.isfinite(initial), axis=-1, keepdims=True), initial,
                           model0)
    params0 = jnp.concatenate([model0, lane.ms_y.reshape(model0.shape[0], -1)], axis=-1)
    lower, upper = _model_bounds(spec)
    return least_squares(_residual_fn(spec), params0, lane, lower=lower, upper=upper,
                         config=LMConfig() if config is None else config)


def _pillar_vols(spec: _Spec, params, lane: _Lane):
    ys = params[:, spec.model_params:].reshape(params.shape[0], spec.pillars, 2)
    vols = jax.vmap(lambda p, y, ln: jax.vmap(
        lambda yy: smile_vol(spec, p, yy, ln))(y.reshape(-1)))(params, ys, lane)
    return ys, vols.reshape(ys.shape)


def _right_of_max(spec: _Spec, ys, vols, expiry):
    """Premium-adjusted calls: the fitted strike must be the market's (right-of-maximum) root."""
    if not is_premium_adjusted(spec.delta_type):
        return jnp.ones(ys.shape[:-1], bool)
    std_dev = vols[..., 0] * jnp.sqrt(expiry)[:, None]
    safe_std = jnp.where(std_dev > 0, std_dev, 0.1)
    d2 = -ys[..., 0] / safe_std - 0.5 * safe_std
    return d2 <= max_delta_d2(safe_std) + 1e-9  # boundary: equal up to rounding


def _fit_status(spec: _Spec, fit, vols, right_branch, dtype):
    from jaxvol.calibrate import FitStatus

    matched = fit.status == FitStatus.CONVERGED
    if spec.exact:
        matched &= jnp.max(jnp.abs(fit.residuals), axis=-1) <= _exactness_tolerance(dtype)
    too_low = fit.residuals[:, 2] > 0  # the model's strangle stays above the market's
    status = jnp.where(too_low, SmileStatus.STRANGLE_TOO_LOW, SmileStatus.FIT_FAILED)
    status = jnp.where(matched, SmileStatus.OK, status)
    status = jnp.where(jnp.all(right_branch, axis=-1), status, SmileStatus.NO_STRIKE_FOR_DELTA)
    finite_vols = jnp.all(jnp.isfinite(vols), axis=(-1, -2))
    status = jnp.where(jnp.all(vols > 0, axis=(-1, -2)) | ~finite_vols, status,
                       SmileStatus.NEGATIVE_VOL)
    breakdown = (fit.status == FitStatus.NON_FINITE) | ~finite_vols
    return jnp.where(breakdown, SmileStatus.SMILE_BREAKDOWN, status).astype(jnp.int32)


def _spec_from_options(delta_type, model, pillars, sabr_beta, vanna_volga_order):
    model = parse_model(model)
    if model == SmileModel.VANNA_VOLGA and pillars == 2:
        raise ValueError("model='vanna_volga' is a three-pillar method (ATM and 25 delta); "
                         "fit 10-delta quotes with model='polynomial' or 'sabr'")
    if vanna_volga_order not in (1, 2):
        raise ValueError(f"vanna_volga_order must be 1 or 2, got {vanna_volga_order!r}")
    return _Spec(model, parse_delta_type(delta_type), pillars, float(sabr_beta),
                 int(vanna_volga_order))


def calibrate_smile(*, spot, expiry, rd, rf, atm, rr25, bf25, rr10=None, bf10=None,
                    delta_type="spot", atm_type="dns", model="polynomial", delivery=None,
                    sabr_beta=1.0, vanna_volga_order=2, initial=None,
                    config=None) -> SmileCalibration:
    """Fit a smile to ATM, risk-reversal and market-strangle quotes, for a batch of rows.

    Args (arrays broadcast together; every element is one pair/tenor row):
      spot; expiry (years, drives the vols); rd, rf (continuously compounded, to delivery);
      atm, rr25, bf25 (and rr10, bf10, both or neither): decimals (0.21, not 21), bf the
        market (broker) strangle;
      delta_type: ``"spot"``, ``"forward"``, ``"spot_pa"``, ``"forward_pa"``;
      atm_type: ``"spot"``, ``"forward"``, ``"dns"``, ``"dns_pa"``;
      model: ``"polynomial"``, ``"sabr"`` (beta ``sabr_beta``) or ``"vanna_volga"`` (order
        ``vanna_volga_order``, 25-delta quotes only);
      delivery: years to delivery for discounting and the forward (default: expiry);
      initial: warm start of the model parameters [..., P] (the ``params`` of a previous
        result; non-finite rows use the default start);
      config: :class:`jaxvol.calibrate.LMConfig` of the fit.

    Returns :class:`SmileCalibration`; ``status`` holds a :class:`SmileStatus` per row, and a
    bad row never changes another row's values or gradients.
    """
    pillars = 1 if rr10 is None else 2
    if (rr10 is None) != (bf10 is None):
        raise ValueError("rr10 and bf10 must be given together (or both left out)")
    spec = _spec_from_options(delta_type, model, pillars, sabr_beta, vanna_volga_order)
    atm_type = parse_atm_type(atm_type)
    given = dict(spot=spot, expiry=expiry, rd=rd, rf=rf, delivery=delivery, atm=atm, rr25=rr25,
                 bf25=bf25, rr10=rr10, bf10=bf10)
    dtype = float_dtype(*given.values())
    given["delivery"] = expiry if delivery is None else delivery
    given = {n: as_float(dtype, 0.0 if v is None else v)[0] for n, v in given.items()}
    shape = jnp.broadcast_shapes(*(v.shape for v in given.values()))
    inputs = {n: jnp.broadcast_to(v, shape).reshape(-1) for n, v in given.items()}
    if initial is not None:
        (initial,) = as_float(dtype, initial)
        if initial.shape != shape + (spec.model_params,):
            raise ValueError(f"initial must have shape {shape + (spec.model_params,)} (the "
                             f"model's params per row), got {initial.shape}")
        initial = initial.reshape(-1, spec.model_params)
    flat = _calibrate_flat(inputs, spec, atm_type, config, initial)
    return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), flat)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _calibrate_flat(inputs, spec, atm_type, config, initial=None):
    status = _screen(inputs, spec.pillars)
    market, lane = _prepare(_masked(inputs, status == SmileStatus.OK), spec, atm_type)
    has_strikes = jnp.all(jnp.isfinite(lane.ms_y), axis=(-1, -2))
    status = jnp.where((status == SmileStatus.OK) & ~has_strikes,
                       SmileStatus.NO_STRIKE_FOR_DELTA, status)
    status = jnp.where((status == SmileStatus.OK) & _below_convexity_bound(lane),
                       SmileStatus.STRANGLE_TOO_LOW, status).astype(jnp.int32)
    good = status == SmileStatus.OK
    _, safe_lane = _prepare(_masked(inputs, jnp.zeros_like(good)), spec, atm_type)
    fit_lane = jax.tree.map(lambda a, b: jnp.where(_expand(good, a), a, b), lane, safe_lane)
    fit = _fit(spec, fit_lane, jnp.where(good, inputs["bf25"], _SAFE_QUOTE["bf25"]), config,
               initial)
    ys, vols = _pillar_vols(spec, fit.params, fit_lane)
    right = _right_of_max(spec, ys, vols, fit_lane.expiry)
    fit_status = _fit_status(spec, fit, vols, right, fit_lane.forward.dtype)
    status = jnp.where(good, fit_status, status).astype(jnp.int32)
    return _result(spec, inputs, market, lane, fit, ys, vols, status)


def _expand(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _result(spec, inputs, market, lane, fit, ys, vols, status):
    ok = status == SmileStatus.OK
    ms_ok = jnp.all(jnp.isfinite(lane.ms_y), axis=(-1, -2)) & (
        functools.reduce(jnp.logical_or, [status == s for s in _MS_REPORTED]))
    nan_unless = lambda mask, a: jnp.where(_expand(mask, a), a, jnp.nan)  # noqa: E731
    strikes = market.forward[:, None, None] * jnp.exp(ys)
    ms_strikes = market.forward[:, None, None] * jnp.exp(lane.ms_y)
    ms_value = lane.ms_value * market.domestic_df[:, None]
    smile_strangle = 0.5 * (vols[..., 0] + vols[..., 1]) - inputs["atm"][:, None]
    fields = dict(
        forward=market.forward, k_atm=market.forward * jnp.exp(market.atm_y),
        ms_strikes=nan_unless(ms_ok, ms_strikes[:, 0]), ms_value=nan_unless(ms_ok, ms_value[:, 0]),
        smile_strangle=nan_unless(ok, smile_strangle[:, 0]), k25=nan_unless(ok, strikes[:, 0]),
        vol25=nan_unless(ok, vols[:, 0]), params=nan_unless(ok, fit.params[:, :spec.model_params]),
        residuals=nan_unless(ok, fit.residuals), status=status, expiry=inputs["expiry"],
        atm=inputs["atm"], loss=nan_unless(ok, fit.loss),
        iterations=jnp.where(ok, fit.iterations, 0), rmse=nan_unless(ok, fit.rmse))
    if spec.pillars == 2:
        fields.update(
            ms10_strikes=nan_unless(ms_ok, ms_strikes[:, 1]),
            ms10_value=nan_unless(ms_ok, ms_value[:, 1]),
            smile_strangle10=nan_unless(ok, smile_strangle[:, 1]),
            k10=nan_unless(ok, strikes[:, 1]), vol10=nan_unless(ok, vols[:, 1]))
    valid_market = status != SmileStatus.MISSING_QUOTE
    valid_market &= status != SmileStatus.BAD_INPUT
    fields["forward"] = nan_unless(valid_market, fields["forward"])
    fields["k_atm"] = nan_unless(valid_market, fields["k_atm"])
    return SmileCalibration(**fields, model=spec.model, delta_type=spec.delta_type,
                            sabr_beta=spec.sabr_beta, vv_order=spec.vv_order)
