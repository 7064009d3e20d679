"""FX delta conventions, ATM strikes and strike from delta (jaxvol.fx.conventions).

References: Wystup, "FX Options and Structured Products" (deltas, 4 decimals as published);
QuantLib's BlackDeltaCalculator (test-suite/blackdeltacalculator.cpp table, and the live
QuantLib library, an independent implementation); scipy for the premium-adjusted maximum.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import QuantLib as ql
from scipy import optimize, stats

import jaxvol
from jaxvol import fx
from jaxvol.fx import StrikeStatus

DELTA_TYPES = ("spot", "forward", "spot_pa", "forward_pa")


def test_wystup_deltas_to_published_4_decimals():
    # Wystup: S=1.20, K=1.25, vol 10%, rd 2.5%, rf 3%, T=1; published rounded to 4 decimals,
    # so the tolerance is half a unit of the 4th decimal.
    published = {"spot": 0.3315, "forward": 0.3416, "spot_pa": 0.3105, "forward_pa": 0.3200}
    for delta_type, value in published.items():
        got = fx.delta(1.25, spot=1.20, expiry=1.0, vol=0.10, rd=0.025, rf=0.03, is_call=True,
                       delta_type=delta_type)
        assert abs(float(got) - value) <= 5e-5, (delta_type, float(got))


# QuantLib delta-calculator test: (is_call, S, Dd, Df, s, delta, K for spot, spot PA, fwd, fwd PA)
QL_ROWS = [
    (True, 1.421, 0.997306, 0.992266, 0.1180654, 0.15, (1.608080, 1.600545, 1.609029, 1.601550)),
    (True, 122.121, 0.9695434, 0.9872347, 0.0887676, 0.67,
     (119.8031, 117.7096, 120.0592, 118.0532)),
    (False, 3.4582, 0.99979, 0.9250616, 0.3199034, -0.821, (4.964924, 3.778327, 4.51896, 3.65728)),
]
QL_TYPES = ("spot", "spot_pa", "forward", "forward_pa")
QL_ENUMS = {"spot": ql.DeltaVolQuote.Spot, "spot_pa": ql.DeltaVolQuote.PaSpot,
            "forward": ql.DeltaVolQuote.Fwd, "forward_pa": ql.DeltaVolQuote.PaFwd}


def _ql_inputs(row):
    is_call, spot, dd, df, std_dev, delta, _ = row
    # T = 1 so vol = s, and the discount factors become continuous rates over one year
    return dict(spot=spot, expiry=1.0, vol=std_dev, rd=float(fx.rate_from_discount(dd, 1.0)),
                rf=float(fx.rate_from_discount(df, 1.0)), is_call=is_call), delta


@pytest.mark.parametrize("row", QL_ROWS)
def test_quantlib_strikes_live_library(row):
    # QuantLib solves the PA cases with a Brent solver at 1e-10 accuracy (in strike) and the
    # non-PA ones in closed form: 1e-9 relative covers both and is far inside the 1e-6 target.
    is_call, spot, dd, df, std_dev, delta, _ = row
    kwargs, delta = _ql_inputs(row)
    option = ql.Option.Call if is_call else ql.Option.Put
    for delta_type in QL_TYPES:
        expected = ql.BlackDeltaCalculator(option, QL_ENUMS[delta_type], spot, dd, df,
                                           std_dev).strikeFromDelta(delta)
        got = fx.strike_from_delta(delta, delta_type=delta_type, **kwargs)
        assert int(got.status) == StrikeStatus.OK
        assert abs(float(got.strike) / expected - 1) <= 1e-9, (delta_type, float(got.strike))


@pytest.mark.parametrize("row", QL_ROWS)
def test_quantlib_strikes_published_table(row):
    # The published strikes are cut to the printed digits (mostly rounded; 117.7096 is truncated
    # from 117.709669): tolerance one unit of the last printed digit. Two spot-PA entries of the published table (1.600545 and 3.778327) differ
    # from what the QuantLib library itself returns (1.6005704, 3.7783156; see the live test) by
    # 1.6e-5 and 3.0e-6 relative, beyond their rounding; they are checked against the library
    # only, and the rest of the table must match to its printed precision.
    kwargs, delta = _ql_inputs(row)
    known_mismatch = {(1.421, "spot_pa"), (3.4582, "spot_pa")}
    for delta_type, published in zip(QL_TYPES, row[-1]):
        if (row[1], delta_type) in known_mismatch:
            continue
        decimals = len(repr(published).split(".")[1])
        got = fx.strike_from_delta(delta, delta_type=delta_type, **kwargs).strike
        assert abs(float(got) - published) <= 10.0**-decimals + 1e-12, (delta_type, got)


def test_round_trip_all_types():
    # delta(strike_from_delta(d)) == d: the closed forms are exact up to rounding and the PA
    # solver converges to machine precision; 1e-12 allows ~10 ulps of rounding in the CDFs.
    deltas = jnp.array([0.05, 0.1, 0.25, 0.4, 0.6, -0.05, -0.25, -0.5, -0.75])
    is_call = deltas > 0
    vols = jnp.array([0.05, 0.1, 0.2, 0.4, 0.8])[:, None]
    expiries = jnp.array([0.02, 0.25, 1.0, 3.0, 10.0])[:, None]
    for delta_type in DELTA_TYPES:
        common = dict(spot=1.3, expiry=expiries, vol=vols, rd=0.03, rf=0.01, is_call=is_call,
                      delta_type=delta_type)
        result = fx.strike_from_delta(deltas, **common)
        back = fx.delta(result.strike, **common)
        ok = result.status == StrikeStatus.OK
        # PA calls above the maximum are the only allowed failures
        if delta_type.endswith("pa"):
            assert jnp.all(ok | (result.status == StrikeStatus.BEYOND_MAX_DELTA))
        else:
            assert jnp.all(ok)
        err = jnp.where(ok, jnp.abs(back - deltas), 0.0)
        assert float(jnp.max(err)) <= 1e-12, delta_type


def test_pa_max_delta_matches_scipy_and_root_is_right_of_max():
    # The maximum of K/F N(d2) over K by a bounded scalar optimiser (xatol 1e-12 on ln K; the
    # maximum is flat, so its value is accurate to ~1e-20): agreement to 1e-12.
    for std_dev in (0.05, 0.3, 1.0, 2.5):
        def minus_delta(log_k, s=std_dev):
            d2 = -log_k / s - 0.5 * s
            return -np.exp(log_k) * stats.norm.cdf(d2)
        best = optimize.minimize_scalar(minus_delta, bounds=(-10 * std_dev - 5, 5),
                                        method="bounded", options={"xatol": 1e-12})
        assert abs(float(fx.max_call_delta_pa(std_dev)) + best.fun) <= 1e-12
        # a delta just below the maximum has two roots; ours is the right one (K > K_max)
        target = 0.999 * -best.fun
        got = fx.strike_from_delta(target, spot=1.0, expiry=1.0, vol=std_dev, rd=0.0, rf=0.0,
                                   is_call=True, delta_type="forward_pa")
        assert int(got.status) == StrikeStatus.OK
        assert np.log(float(got.strike)) > best.x
        back = fx.delta(got.strike, spot=1.0, expiry=1.0, vol=std_dev, rd=0.0, rf=0.0,
                        is_call=True, delta_type="forward_pa")
        assert abs(float(back) - target) <= 1e-12


def test_beyond_max_and_bad_inputs_give_status_and_do_not_touch_other_lanes():
    deltas = jnp.array([0.25, 0.95, -0.25, 0.25, 0.25, 0.25, 1.2, jnp.nan, -1.5])
    vols = jnp.array([0.2, 0.3, 0.2, -0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    expiries = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    is_call = jnp.array([True, True, True, True, True, False, True, True, False])
    common = dict(spot=1.1, rd=0.02, rf=0.01, delta_type="spot_pa")
    got = fx.strike_from_delta(deltas, expiry=expiries, vol=vols, is_call=is_call, **common)
    expected = [StrikeStatus.OK, StrikeStatus.BEYOND_MAX_DELTA, StrikeStatus.DELTA_OUT_OF_RANGE,
                StrikeStatus.BAD_INPUT, StrikeStatus.BAD_INPUT, StrikeStatus.DELTA_OUT_OF_RANGE,
                StrikeStatus.DELTA_OUT_OF_RANGE, StrikeStatus.NON_FINITE_INPUT, StrikeStatus.OK]
    assert got.status.tolist() == [int(s) for s in expected]
    ok = got.status == StrikeStatus.OK
    assert bool(jnp.all(jnp.isnan(got.strike) != ok))
    # the good lanes are bit-identical to computing them alone
    alone = fx.strike_from_delta(deltas[ok], expiry=expiries[ok], vol=vols[ok],
                                 is_call=is_call[ok], **common)
    assert jnp.array_equal(alone.strike, got.strike[ok])
    # and their gradients are finite while the bad lanes give zero/NaN-free cotangents
    grad = jax.grad(lambda d: jnp.nansum(fx.strike_from_delta(
        d, expiry=expiries, vol=vols, is_call=is_call, **common).strike))(deltas)
    assert bool(jnp.all(jnp.isfinite(grad[ok])))


@pytest.mark.parametrize("delta_type", DELTA_TYPES)
def test_gradients_match_finite_differences(delta_type):
    # Implicit-function gradients of the PA root vs central differences (step 1e-6: truncation
    # ~1e-12, rounding ~1e-10 relative), tolerance 1e-7 relative.
    args = dict(spot=1.25, expiry=0.7, rd=0.03, rf=0.015, delta_type=delta_type)

    def strike(delta, vol, is_call):
        return fx.strike_from_delta(delta, vol=vol, is_call=is_call, **args).strike

    for delta, is_call in ((0.3, True), (-0.2, False)):
        for argnum in (0, 1):
            x = [delta, 0.15]
            grad = jax.grad(strike, argnums=argnum)(*x, is_call)
            h = 1e-6
            up, down = list(x), list(x)
            up[argnum] += h
            down[argnum] -= h
            fd = (strike(*up, is_call) - strike(*down, is_call)) / (2 * h)
            assert abs(float(grad) / float(fd) - 1) <= 1e-7, (delta_type, is_call, argnum)


def test_float32_in_float32_out():
    got = fx.strike_from_delta(jnp.float32(0.25), spot=jnp.float32(1.3), expiry=jnp.float32(1.0),
                               vol=jnp.float32(0.1), rd=jnp.float32(0.02), rf=jnp.float32(0.01),
                               is_call=True, delta_type="spot_pa")
    assert got.strike.dtype == jnp.float32
    ref = fx.strike_from_delta(0.25, spot=1.3, expiry=1.0, vol=0.1, rd=0.02, rf=0.01,
                               is_call=True, delta_type="spot_pa")
    # float32 carries ~6e-8 relative rounding; the solve amplifies it by |dlnK/dd2| ~ s: 1e-6
    assert abs(float(got.strike) / float(ref.strike) - 1) <= 1e-6
    d = fx.delta(jnp.float32(1.3), spot=jnp.float32(1.3), expiry=jnp.float32(1.0),
                 vol=jnp.float32(0.1), rd=jnp.float32(0.02), rf=jnp.float32(0.01), is_call=True)
    assert d.dtype == jnp.float32


def test_atm_strikes():
    # Closed forms; the DNS strike reproduces Clark's EURUSD 1Y ATM strike 1.362010 (6 decimals)
    common = dict(spot=1.3465, expiry=1.0, vol=0.1825, rd=0.0294, rf=0.0346)
    forward = 1.3465 * np.exp(0.0294 - 0.0346)
    s2 = 0.1825**2
    assert abs(float(fx.atm_strike(atm_type="spot", **common)) - 1.3465) <= 1e-15
    assert abs(float(fx.atm_strike(atm_type="forward", **common)) - forward) <= 1e-15
    assert abs(float(fx.atm_strike(atm_type="dns", **common)) - forward * np.exp(s2 / 2)) <= 1e-15
    assert abs(float(fx.atm_strike(atm_type="dns_pa", **common))
               - forward * np.exp(-s2 / 2)) <= 1e-15
    assert abs(float(fx.atm_strike(atm_type="dns", **common)) - 1.362010) <= 5e-7
    # the DNS strikes are where the straddle delta vanishes under the matching convention
    for atm_type, delta_type in (("dns", "forward"), ("dns_pa", "forward_pa")):
        k = fx.atm_strike(atm_type=atm_type, **common)
        straddle = sum(fx.delta(k, is_call=c, delta_type=delta_type, **common)
                       for c in (True, False))
        assert abs(float(straddle)) <= 1e-15


def test_delivery_and_discount_factor_inputs():
    # vol runs to expiry, carry and discounting to delivery (expiry + 2 days): closed form
    expiry, delivery, spot, vol, dd, df = 0.5, 0.5 + 2 / 365, 1.1, 0.12, 0.985, 0.991
    rd, rf = fx.rate_from_discount(dd, delivery), fx.rate_from_discount(df, delivery)
    forward = spot * df / dd
    d1 = np.log(forward / 1.15) / (vol * np.sqrt(expiry)) + 0.5 * vol * np.sqrt(expiry)
    got = fx.delta(1.15, spot=spot, expiry=expiry, vol=vol, rd=rd, rf=rf, is_call=True,
                   delta_type="spot", delivery=delivery)
    assert abs(float(got) - df * stats.norm.cdf(d1)) <= 1e-15
    strike = fx.strike_from_delta(got, spot=spot, expiry=expiry, vol=vol, rd=rd, rf=rf,
                                  is_call=True, delta_type="spot", delivery=delivery).strike
    assert abs(float(strike) - 1.15) <= 1e-13


def test_unknown_conventions_raise():
    with pytest.raises(ValueError, match="delta_type"):
        fx.delta(1.0, spot=1.0, expiry=1.0, vol=0.1, rd=0.0, rf=0.0, is_call=True,
                 delta_type="spotty")
    with pytest.raises(ValueError, match="atm_type"):
        fx.atm_strike(spot=1.0, expiry=1.0, vol=0.1, rd=0.0, rf=0.0, atm_type="atmf")


def test_exposed_at_package_level():
    assert jaxvol.fx.strike_from_delta is fx.strike_from_delta
