"""The report's host (numpy) model curves against the library and published prices, and the
report's helpers that need no job run (reasons of failed fits, clipped histograms).

The report evaluates its SVI, SSVI, SABR and Heston curves in numpy so that it compiles
nothing (jaxvol/report/curves.py); these tests hold that copy of the formulas to the library's
JAX kernels and to the Heston reference prices of tests/data/heston_prices.csv (Lewis via
QuantLib's hestonmodel test, Fang-Oosterlee) and tests/data/heston_box_mpmath.csv (30-digit
mpmath Lewis integrals).
"""

import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxvol.report import curves, plots
from jaxvol.report.html import fit_reasons

DATA = pathlib.Path(__file__).parent / "data"
K = np.linspace(-0.8, 0.6, 29)


def test_svi_and_ssvi_curves_match_the_library():
    # Same closed forms, float64 on both sides: agreement to 1e-13 (a few ulps of vols ~0.3).
    from jaxvol.smile import ssvi, svi
    params = (0.02, 0.1, -0.6, 0.05, 0.2)
    expiry = 0.5
    w = np.asarray(svi.total_variance(K, *params))
    np.testing.assert_allclose(curves.svi_vol(K, expiry, *params), np.sqrt(w / expiry),
                               rtol=1e-13)
    theta, rho = 0.03, -0.4
    for form, phi_params, library in (("power_law", (0.9, 0.4), ssvi.power_law_phi),
                                      ("heston", (3.0,), ssvi.heston_phi)):
        phi = curves.ssvi_phi(form, theta, phi_params)
        np.testing.assert_allclose(phi, float(library(theta, *phi_params)), rtol=1e-13)
        w = np.asarray(ssvi.total_variance(K, theta, rho, phi))
        np.testing.assert_allclose(curves.ssvi_vol(K, expiry, theta, rho, phi),
                                   np.sqrt(w / expiry), rtol=1e-13)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_sabr_curve_matches_the_library(beta):
    # Hagan's formula both sides; the library switches to a series for |z| < its own cut-off
    # (the numpy copy at 1e-6), so agreement is to 1e-10 relative, not to the last ulp.
    from jaxvol.smile import sabr
    forward, expiry, alpha, rho, nu = 100.0, 0.75, 0.3 if beta == 1.0 else 3.0, -0.4, 0.9
    strike = forward * np.exp(K)
    library = np.asarray(sabr.implied_vol(forward, strike, expiry, alpha, beta, rho, nu))
    np.testing.assert_allclose(curves.sabr_vol(forward, strike, expiry, alpha, beta, rho, nu),
                               library, rtol=1e-10)


@pytest.mark.parametrize("name", ["heston_prices.csv", "heston_box_mpmath.csv"])
def test_heston_curve_reprices_the_references(name):
    # Published/mpmath prices per unit spot to 1e-12 absolute (the quadrature reaches ~1e-14
    # of the forward on these rows; the references are given to 12-16 digits), including the
    # one-day expiries with sigma = 2 of the box file.
    table = pd.read_csv(DATA / name, comment="#")
    for _, row in table.iterrows():
        forward = row["spot"] * np.exp((row["rate"] - row["div"]) * row["expiry"])
        discount = np.exp(-row["rate"] * row["expiry"])
        k = np.log(row["strike"] / forward)
        otm = curves.heston_otm(k, row["expiry"], row["v0"], row["kappa"], row["theta"],
                                row["sigma"], row["rho"])[0]
        call = otm if k >= 0 else otm + 1.0 - np.exp(k)
        price = discount * forward * call
        if not row["is_call"]:
            price -= discount * (forward - row["strike"])
        assert abs(price - row["price"]) / row["spot"] < 1e-12, row.to_dict()


def test_black_inversion_round_trips():
    # Bisection to 70 halvings of [1e-4, 10] in vol sqrt(T): 1e-12 relative on vols 5%-150%.
    expiry = np.full(K.shape, 0.4)
    vol = np.linspace(0.05, 1.5, K.size)
    value = curves.black_otm(K, vol * np.sqrt(expiry))
    np.testing.assert_allclose(curves.implied_vol_otm(K, expiry, value), vol, rtol=1e-12)
    assert np.isnan(curves.implied_vol_otm(np.array([0.1]), 0.4, np.array([2.0]))[0])


def test_slice_models_draws_each_fitted_model_and_skips_missing_ones():
    slice_row = pd.Series({"expiry": 0.5, "forward": 100.0, "svi_a": 0.02, "svi_b": 0.1,
                           "svi_rho": -0.6, "svi_m": 0.05, "svi_sigma": 0.2,
                           "svi_status_name": "AT_BOUND", "sabr_alpha": 0.3, "sabr_beta": 1.0,
                           "sabr_rho": -0.4, "sabr_nu": 0.9, "sabr_status_name": "CONVERGED",
                           "ssvi_theta": 0.03})
    under = pd.Series({"ssvi_rho": -0.4, "ssvi_phi_0": 0.9, "ssvi_phi_1": 0.4,
                       "ssvi_status_name": "CONVERGED", "heston_v0": 0.04, "heston_kappa": 2.0,
                       "heston_theta": 0.05, "heston_sigma": 0.6, "heston_rho": -0.6,
                       "heston_status_name": "AT_BOUND"})
    drawn = curves.slice_models(slice_row, under, K)
    assert set(drawn) == {"SVI", "SSVI", "SABR", "Heston"}
    assert drawn["SVI"][1] == "AT_BOUND" and drawn["Heston"][1] == "AT_BOUND"
    for vol, _ in drawn.values():
        assert np.all(np.isfinite(vol)) and np.all((vol > 0.05) & (vol < 1.0))
    assert set(curves.slice_models(slice_row.drop("svi_a"), None, K)) == {"SABR"}


def test_fit_reasons_name_the_condition():
    slices = pd.DataFrame({
        "svi_b": [5.0, 0.1, 0.1, 0.1], "svi_rho": [-1.0, -1.0, -0.2, 0.3],
        "svi_sigma": [0.1, 0.1, 1e-4, 0.2],
        "svi_status_name": ["DEGENERATE", "AT_BOUND", "AT_BOUND", "ARBITRAGE"],
        "sabr_rho": [-1.0, 0.2, 0.1, 0.1], "sabr_nu": [0.5, 9.0, 0.5, 0.5],
        "expiry": [0.1, 0.5, 0.5, 0.5],
        "sabr_status_name": ["AT_BOUND", "DEGENERATE", "MAX_ITERATIONS", "TOO_FEW_POINTS"]})
    svi = fit_reasons(slices, "svi").tolist()
    assert "Lee's wing bound: b(1+|rho|) = 10 > 2" in svi[0] and "rho = -1" in svi[0]
    assert svi[1] == "rho = -1 (on the face)"
    assert svi[2] == "sigma = 0.0001 or m = nan on its box"  # no quoted range: either
    assert "Durrleman g < 0" in svi[3]
    sabr = fit_reasons(slices, "sabr").tolist()
    assert sabr[0] == "|rho| = 1" and sabr[1] == "nu^2 T = 40.5 > 25"
    assert "max_iterations" in sabr[2] and sabr[3] == "too few usable quotes to fit"


def test_fit_reasons_name_the_bound_with_the_quoted_range():
    # svi.fit's box from the quoted k range [k_lo, k_lo + R]: sigma in [R/100, 10 R], m in
    # [k_lo - R, k_lo + 2 R]; Heston's box is jaxvol.heston.LOWER / UPPER.
    slices = pd.DataFrame({"svi_b": [0.1, 0.1], "svi_rho": [-0.3, 0.2],
                           "svi_sigma": [0.004, 0.1], "svi_m": [0.0, -0.6],
                           "svi_status_name": ["AT_BOUND", "AT_BOUND"],
                           "k_lo": [-0.2, -0.2], "k_span": [0.4, 0.4]})
    svi = fit_reasons(slices, "svi").tolist()
    assert svi[0].startswith("sigma = 0.004 on its floor R/100 (R = 0.4")
    assert svi[1] == "m = -0.6 on the edge of [k_lo - R, k_lo + 2R] = [-0.6, 0.6]"
    under = pd.DataFrame({"heston_v0": [0.04], "heston_kappa": [30.0], "heston_theta": [0.05],
                          "heston_sigma": [5.0], "heston_rho": [-0.5],
                          "heston_status_name": ["AT_BOUND"]})
    assert fit_reasons(under, "heston")[0] == ("kappa = 30 at its upper bound 30; sigma = 5 at "
                                               "its upper bound 5")


def test_histograms_clip_outliers_and_count_them():
    # 990 values in [0, 1) and 10 absurd ones (2e12, as SVI's b on the default market): the
    # shown range excludes them and the count says so.
    values = np.concatenate([np.linspace(0.0, 1.0, 990, endpoint=False), np.full(10, 2e12)])
    shown, below, above = plots.clipped(values)
    assert shown.max() < 1.0 and above >= 10 and below + above + len(shown) == 1000
