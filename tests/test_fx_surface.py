"""Vanna-volga and polynomial smile formulas, the FX surface across tenors and the quotes table.

The vanna-volga formulas are checked against a direct numpy transcription of Castagna &
Mercurio (2007) eqs. (14)-(15); the surface and table against jaxvol.fx.calibrate_smile itself
(the calibration's accuracy is established in test_fx_strangle.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxvol import fx
from jaxvol.fx import SmileStatus

SPOT, RD, RF = 1.3465, 0.0294, 0.0346
# eight tenors (days, ATM %, BF25 %, RR25 %): Clark's EURUSD 1M, 3M, 1Y, 2Y plus four made-up
# tenors in between, so the batch has the same shape (8) as the calibration tests
TENORS = np.array([[7, 21.5, 0.55, -0.15], [30, 21.0, 0.65, -0.2], [91, 20.75, 0.85, -0.3],
                   [182, 19.8, 0.9, -0.45], [365, 18.25, 0.95, -0.6], [547, 17.9, 0.9, -0.58],
                   [730, 17.677, 0.85, -0.562], [1095, 17.2, 0.8, -0.5]])
EXPIRY = TENORS[:, 0] / 365


def _cm_numpy(k, forward, t, ks, vols, order):
    """Castagna-Mercurio vanna-volga vol, a direct transcription in numpy."""
    (k1, k2, k3), (s1, s2, s3) = ks, vols
    lg = np.log
    y1 = lg(k2 / k) * lg(k3 / k) / (lg(k2 / k1) * lg(k3 / k1))
    y2 = lg(k / k1) * lg(k3 / k) / (lg(k2 / k1) * lg(k3 / k2))
    y3 = lg(k / k1) * lg(k / k2) / (lg(k3 / k1) * lg(k3 / k2))
    first = y1 * s1 + y2 * s2 + y3 * s3
    if order == 1:
        return first
    d1 = lambda x: (lg(forward / x) + 0.5 * s2**2 * t) / (s2 * np.sqrt(t))  # noqa: E731
    dd = lambda x: d1(x) * (d1(x) - s2 * np.sqrt(t))  # noqa: E731
    big_d2 = y1 * dd(k1) * (s1 - s2) ** 2 + y3 * dd(k3) * (s3 - s2) ** 2
    radicand = s2**2 + dd(k) * (2 * s2 * (first - s2) + big_d2)
    with np.errstate(invalid="ignore"):  # NaN where the method breaks down
        return s2 + (-s2 + np.sqrt(radicand)) / dd(k)


@pytest.mark.parametrize("order", [1, 2])
def test_vanna_volga_formula_matches_numpy(order):
    # Same formula, same float64 operations up to reordering: 1e-13 absolute in vol. At the
    # pillars the formula returns the pillar vols (1e-14).
    forward, t = 1.34, 0.75
    pillars, vols = np.array([1.22, 1.36, 1.50]), np.array([0.205, 0.19, 0.196])
    strikes = np.linspace(1.0, 1.8, 41)
    strikes = strikes[np.min(np.abs(strikes[:, None] - pillars), axis=1) > 1e-3]
    got = fx.vanna_volga_vol(strikes, forward=forward, expiry=t, pillar_strikes=pillars,
                             pillar_vols=vols, order=order)
    expected = _cm_numpy(strikes, forward, t, pillars, vols, order)
    assert np.max(np.abs(np.asarray(got) - expected)) <= 1e-13
    at_pillars = fx.vanna_volga_vol(pillars, forward=forward, expiry=t, pillar_strikes=pillars,
                                    pillar_vols=vols, order=order)
    assert np.max(np.abs(np.asarray(at_pillars) - vols)) <= 1e-14


def test_vanna_volga_breakdown_is_nan_and_isolated():
    # A steep skew makes the second-order square root's argument negative past the call pillar:
    # NaN there, finite vols and gradients elsewhere in the same batch.
    forward, t = 1.0, 2.0
    pillars, vols = np.array([0.8, 1.0, 1.25]), np.array([0.45, 0.2, 0.06])
    strikes = np.array([0.9, 1.1, np.exp(0.3), 0.3, 3.0])  # sqrt breaks down at e^0.3
    expected = _cm_numpy(strikes, forward, t, pillars, vols, 2)  # numpy: NaN where sqrt(<0)
    got = fx.vanna_volga_vol(strikes, forward=forward, expiry=t, pillar_strikes=pillars,
                             pillar_vols=vols)
    bad = ~np.isfinite(expected) | (expected <= 0)
    assert bad.any() and (~bad).any()
    assert np.array_equal(np.isnan(np.asarray(got)), bad)
    assert np.max(np.abs(np.asarray(got)[~bad] - expected[~bad])) <= 1e-13
    grad = jax.grad(lambda k: jnp.nansum(fx.vanna_volga_vol(
        k, forward=forward, expiry=t, pillar_strikes=pillars, pillar_vols=vols)))(
            jnp.asarray(strikes))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_polynomial_vol_matches_numpy():
    # Clark's ln-vol quadratic in simple delta, numpy transcription: 1e-15 relative
    from scipy import stats
    coefficients = np.array([-1.54, -0.69, 0.70])
    strikes, forward, t, atm = np.array([1.1, 1.3, 1.5]), 1.34, 1.0, 0.1825
    x = stats.norm.cdf(np.log(forward / strikes) / (atm * np.sqrt(t)))
    expected = np.exp(coefficients[0] + coefficients[1] * x + coefficients[2] * x * x)
    got = fx.polynomial_vol(strikes, forward=forward, expiry=t, atm_vol=atm,
                            coefficients=coefficients)
    assert np.max(np.abs(np.asarray(got) / expected - 1)) <= 1e-15


@pytest.fixture(scope="module")
def smiles():
    return fx.calibrate_smile(spot=SPOT, expiry=jnp.asarray(EXPIRY), rd=RD, rf=RF,
                              atm=jnp.asarray(TENORS[:, 1] / 100),
                              bf25=jnp.asarray(TENORS[:, 2] / 100),
                              rr25=jnp.asarray(TENORS[:, 3] / 100), model="polynomial")


def test_surface_reproduces_tenor_smiles_and_interpolates_total_variance(smiles):
    surface = fx.FXVolSurface.from_calibration(smiles, SPOT)
    # at a tenor the surface is that tenor's smile (1e-14: same formula, a round trip of z)
    strikes = jnp.array([1.2, 1.35, 1.5])
    for i in (0, 4, 7):
        got = surface.vol(strikes, EXPIRY[i])
        own = smiles.vol(jnp.broadcast_to(strikes, (8, 3)))[i]
        assert float(jnp.max(jnp.abs(got - own))) <= 1e-14
    # the forward at a tenor is that tenor's forward (1e-15 relative: exp/log round trip)
    assert float(jnp.max(jnp.abs(surface.forward(jnp.asarray(EXPIRY)) / smiles.forward - 1))) \
        <= 1e-15
    # between tenors 4 and 5 the total variance at fixed z = ln(K/F)/sqrt(T) is linear in T
    t4, t5 = EXPIRY[4], EXPIRY[5]
    t = 0.3 * t4 + 0.7 * t5
    z = np.log(1.45 / float(surface.forward(t))) / np.sqrt(t)
    k4 = float(smiles.forward[4]) * np.exp(z * np.sqrt(t4))
    k5 = float(smiles.forward[5]) * np.exp(z * np.sqrt(t5))
    w4 = float(smiles.vol(jnp.full((8, 1), k4))[4, 0]) ** 2 * t4
    w5 = float(smiles.vol(jnp.full((8, 1), k5))[5, 0]) ** 2 * t5
    expected = np.sqrt((0.3 * w4 + 0.7 * w5) / t)
    assert abs(float(surface.vol(1.45, t)) - expected) <= 1e-14
    # beyond the last tenor the vol at the same z is held
    far = surface.vol(float(surface.forward(5.0)), 5.0)
    last = surface.vol(float(surface.forward(EXPIRY[-1])), EXPIRY[-1])
    assert abs(float(far) - float(last)) <= 1e-14


def test_surface_vol_at_delta_is_a_fixed_point(smiles):
    # the returned strike has the requested spot delta at the surface's own vol there: the
    # fixed point contracts by ~|dvol/dlnK| * s per step, 30 steps leave < 1e-12
    surface = fx.FXVolSurface.from_calibration(smiles, SPOT)
    expiry = jnp.array([0.5, 1.0, 1.7])
    for is_call, target in ((True, 0.25), (False, -0.1)):
        strike, vol = surface.vol_at_delta(target, expiry, rd=RD, rf=RF, is_call=is_call)
        assert float(jnp.max(jnp.abs(surface.vol(strike, expiry) - vol))) <= 1e-12
        back = fx.delta(strike, spot=SPOT, expiry=expiry, vol=vol, rd=RD, rf=RF,
                        is_call=is_call)
        assert float(jnp.max(jnp.abs(back - target))) <= 1e-12
    # at 1Y the 25-delta call of the surface is the calibrated smile's own 25-delta call
    strike, vol = surface.vol_at_delta(0.25, EXPIRY[4], rd=RD, rf=RF, is_call=True)
    assert abs(float(strike) - float(smiles.k25[4, 0])) <= 1e-10


def test_quotes_table_per_row_status(smiles):
    rows = []
    for i, (days, atm, bf, rr) in enumerate(TENORS):
        rows.append(dict(pair="EURUSD", tenor=f"{int(days)}D", expiry=days / 365, spot=SPOT,
                         rd=RD, rf=RF, atm=atm / 100, rr25=rr / 100, bf25=bf / 100,
                         delta_type="spot", atm_type="dns"))
    rows[2]["atm"] = None  # a missing field
    rows[5]["delta_type"] = "spotty"  # an unknown convention
    table = pd.DataFrame(rows)
    out = fx.calibrate_quotes(table)
    assert list(out["pair"]) == ["EURUSD"] * 8
    assert out["status"].tolist() == [0, 0, SmileStatus.MISSING_QUOTE, 0, 0,
                                      fx.table.UNKNOWN_CONVENTION, 0, 0]
    assert out["status_name"][2] == "NON_FINITE_INPUT"  # was MISSING_QUOTE (an alias now)
    good = [0, 1, 3, 4, 6, 7]
    # each good row equals the direct batched calibration (rows never interact)
    assert np.max(np.abs(out["smile_strangle"].to_numpy()[good]
                         - np.asarray(smiles.smile_strangle)[good])) <= 1e-15
    assert np.max(np.abs(out[["k25_call", "k25_put"]].to_numpy()[good]
                         - np.asarray(smiles.k25)[good])) <= 1e-15
    assert out.loc[[2, 5], "smile_strangle"].isna().all()
    # groups are padded to power-of-two buckets: 5 rows reuse the 8-row compilation
    compiled = fx.strangle._calibrate_flat._cache_size()
    fewer = fx.calibrate_quotes(table.iloc[:6])
    assert fx.strangle._calibrate_flat._cache_size() == compiled
    assert np.array_equal(fewer["smile_strangle"].to_numpy(), out["smile_strangle"].to_numpy()[:6],
                          equal_nan=True)
    with pytest.raises(ValueError, match="bf25"):
        fx.calibrate_quotes(table.drop(columns=["bf25"]))
