"""Local volatility from implied surfaces: closed forms, Gatheral = Dupire, statuses, gradients.

References: a flat surface and w = int sigma(t)^2 dt (closed forms: Gatheral's formula returns
the vol exactly); Dupire's formula in call prices (an independent formula in other variables);
Durrleman's g of an SVI slice in closed form (jaxvol.svi.durrleman_g) for the arbitrage region;
central finite differences for the gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol import localvol as lv

SSVI = lv.SSVISurface(np.array([0.1, 0.5, 1.0, 2.0]), np.array([0.004, 0.022, 0.045, 0.1]),
                      -0.55, np.array([0.9, 0.3]), phi="power_law")


def test_flat_surface_returns_its_vol():
    # w = vol^2 t: dw/dT = vol^2, g = 1 exactly, so the only error is rounding (1e-15)
    k, t = np.linspace(-2, 2, 9)[:, None], np.array([0.01, 0.5, 3.0])[None, :]
    out = lv.local_vol(lv.flat_surface(0.23), k, t)
    np.testing.assert_allclose(out.vol, 0.23, rtol=1e-14)
    assert np.all(out.status == 0)


def test_term_structure_returns_sigma_of_t():
    # w(k, T) = int_0^T (0.2 + 0.1 t + 0.05 sin 3t)^2 dt  =>  sigma_L(k, T) = sigma(T) exactly;
    # the integral is done by Gauss-Legendre (exact to 1e-15 for this smooth integrand)
    nodes, weights = np.polynomial.legendre.leggauss(40)

    def w(k, t):
        s = 0.5 * t * (jnp.asarray(nodes) + 1.0)
        sigma = 0.2 + 0.1 * s + 0.05 * jnp.sin(3.0 * s)
        return 0.5 * t * jnp.sum(jnp.asarray(weights) * sigma * sigma) + 0.0 * k

    t = np.array([0.05, 0.3, 1.0, 2.5])
    out = lv.local_vol(w, np.zeros_like(t), t)
    np.testing.assert_allclose(out.vol, 0.2 + 0.1 * t + 0.05 * np.sin(3 * t), rtol=1e-12)


def test_gatheral_equals_dupire_on_ssvi():
    # both formulas by autodiff in float64; they agree to rounding where both are defined,
    # i.e. where d2C/dK2 is not lost to rounding: within 4 ATM standard deviations
    # (|k| <= 4 sqrt(theta(T))), T in [0.05, 3] including the short- and long-end
    # extrapolation. Acceptance: 1e-8 relative (measured 1e-13).
    spot, rate, div = 100.0, 0.03, 0.01
    k = np.linspace(-0.8, 0.6, 15)[:, None]
    t = np.array([0.05, 0.3, 0.75, 1.5, 3.0])[None, :]
    gatheral = lv.local_vol(SSVI, k, t)
    strike = spot * np.exp((rate - div) * t) * np.exp(k)
    dupire = lv.dupire_local_vol(lv.call_prices(SSVI, spot=spot, rate=rate, div=div),
                                 strike, t, rate=rate, div=div)
    assert np.all(gatheral.status == 0) and np.all(dupire.status == 0)
    inside = np.abs(k) <= 4 * np.sqrt(np.asarray(SSVI.atm_variance(t)))
    assert inside.sum() >= 50
    np.testing.assert_allclose(dupire.vol[inside], gatheral.vol[inside], rtol=1e-8)


def test_butterfly_arbitrage_region_only():
    # Gatheral & Jacquier (2014) example 3.1: a raw SVI slice with g < 0 on an interval of k.
    # The NaN/status region must be exactly where the closed-form g <= 0, and elsewhere the
    # value must be dw/dT / g from the closed-form derivatives (rounding tolerance 1e-12).
    params = np.array([[-0.0410, 0.1331, 0.3060, 0.3586, 0.4153]])
    surface = lv.SVISurface(np.array([1.0]), params)
    k = np.linspace(-1.5, 1.5, 301)
    out = lv.local_vol(surface, k, 1.0)
    g = np.asarray(jaxvol.svi.durrleman_g(k, *params[0]))
    bad = g <= 0
    assert 0 < bad.sum() < len(k) / 2  # an arbitrage region, not the whole slice
    assert np.all(np.isnan(out.vol[bad]))
    assert np.all(out.status[bad] == lv.LVStatus.BUTTERFLY_ARBITRAGE)
    assert np.all(out.status[~bad] == 0)
    w = np.asarray(jaxvol.svi.total_variance(k, *params[0]))  # dw/dT = w(k, T1)/T1, T1 = 1
    np.testing.assert_allclose(out.vol[~bad], np.sqrt(w[~bad] / g[~bad]), rtol=1e-12)
    diag = lv.diagnostics(surface, k, 1.0)
    np.testing.assert_allclose(diag.butterfly, np.maximum(-g, 0), atol=1e-14)
    summary = lv.violation_summary(diag, k, 1.0)
    assert summary["butterfly"]["count"] == bad.sum() and summary["calendar"]["count"] == 0
    assert summary["butterfly"]["at_k"] == pytest.approx(k[np.argmin(g)])


def test_calendar_arbitrage_and_bad_points_get_status_not_exceptions():
    # two SVI slices whose total variance decreases at k = 0 between T = 0.5 and T = 1
    params = np.array([[0.04, 0.1, -0.5, 0.0, 0.2], [0.03, 0.1, -0.5, 0.0, 0.2]])
    surface = lv.SVISurface(np.array([0.5, 1.0]), params)
    out = lv.local_vol(surface, np.array([0.0, 0.0, np.nan, 0.0]),
                       np.array([0.75, 0.25, 0.5, -1.0]))
    assert list(np.asarray(out.status)) == [lv.LVStatus.CALENDAR_ARBITRAGE, 0,
                                            lv.LVStatus.NON_FINITE_INPUT, lv.LVStatus.BAD_INPUT]
    assert np.isnan(np.asarray(out.vol)[[0, 2, 3]]).all() and np.isfinite(out.vol[1])


def test_gradients_wrt_surface_parameters():
    # d sigma_L / d (theta_2, rho) by autodiff vs central differences (step 1e-6: truncation
    # ~1e-12, rounding ~1e-10 relative): 1e-6 relative
    def f(theta2, rho):
        s = lv.SSVISurface(SSVI.expiry, SSVI.theta.at[2].set(theta2), rho, SSVI.phi_params,
                           phi="power_law")
        return jnp.sum(lv.local_vol(s, jnp.array([-0.3, 0.0, 0.2]), 0.8).vol)

    grad = jax.grad(f, argnums=(0, 1))(0.045, -0.55)
    h = 1e-6
    fd = ((f(0.045 + h, -0.55) - f(0.045 - h, -0.55)) / (2 * h),
          (f(0.045, -0.55 + h) - f(0.045, -0.55 - h)) / (2 * h))
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_bad_point_does_not_touch_other_gradients():
    # a NaN point in the batch gives NaN there and finite gradients everywhere (double where)
    def f(theta2):
        s = lv.SSVISurface(SSVI.expiry, SSVI.theta.at[2].set(theta2), SSVI.rho, SSVI.phi_params,
                           phi="power_law")
        vol = lv.local_vol(s, jnp.array([0.0, jnp.nan]), jnp.array([0.8, 0.8])).vol
        return jnp.nansum(vol)

    assert np.isfinite(jax.grad(f)(0.045))


def test_batched_surfaces_match_lanes_and_tables():
    # two underlyings in one SVISurface batch = each lane alone (bitwise: the same kernel);
    # from_tables builds the same surface from the nightly job's slice columns
    expiry = np.array([[0.25, 1.0], [0.5, 2.0]])
    params = np.array([[[0.01, 0.1, -0.4, 0.0, 0.2], [0.04, 0.12, -0.4, 0.02, 0.25]],
                       [[0.02, 0.08, -0.2, 0.0, 0.3], [0.08, 0.1, -0.3, 0.0, 0.3]]])
    batch = lv.SVISurface(expiry, params)
    k = np.array([[-0.2, 0.0, 0.3], [-0.1, 0.1, 0.2]])
    both = lv.local_vol(batch, k, 0.6)
    for i in range(2):
        np.testing.assert_array_equal(both.vol[i], lv.local_vol(batch.lane(i), k[i], 0.6).vol)
    slices = pd.DataFrame({"underlying": ["A", "A", "B", "B", "B"],
                           "expiry": [1.0, 0.25, 0.5, 2.0, 3.0],
                           "forward": [100.0, 100.0, 50.0, 50.0, 50.0],
                           "svi_status": [0, 0, 0, 0, 5]})
    rows = np.concatenate([params[0][::-1], params[1], params[1][-1:]])
    for j, name in enumerate(["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]):
        slices[name] = rows[:, j]
    surfaces = lv.from_tables(slices)
    assert sorted(surfaces) == ["A", "B"]
    np.testing.assert_array_equal(surfaces["B"].expiry, [0.5, 2.0])  # failed slice dropped
    np.testing.assert_array_equal(lv.local_vol(surfaces["A"], k[0], 0.6).vol, both.vol[0])


def test_float32_in_float32_out_and_misuse_raises():
    out = lv.local_vol(lv.flat_surface(np.float32(0.2)), np.float32(0.1), np.float32(0.5))
    assert out.vol.dtype == jnp.float32 and abs(float(out.vol) - 0.2) < 1e-6
    with pytest.raises(ValueError, match="w must be"):
        lv.local_vol(0.2, 0.0, 1.0)
    with pytest.raises(ValueError, match="batch shape"):
        lv.local_vol(lv.SVISurface(np.ones((2, 1)), np.ones((2, 1, 5))), np.zeros((3, 4)), 1.0)
