"""jaxvol.mc Heston schemes: published hard cases, bias orders, measures, reproducibility,
bad lanes and AD greeks.

References: tests/data/mc_andersen_cases.csv (Andersen 2008 cases I-III, jaxvol.heston.price
checked there against QuantLib's AnalyticHestonEngine), CIR closed forms (jaxvol.heston
measures, checked against mpmath quadrature), and jax.grad of jaxvol.heston.price. Monte Carlo
tolerances are 3 standard errors of the estimator reported by the engine (a fixed seed, so the
test is deterministic; a correct scheme fails such a bound with probability ~0.3% per number).
"""

import csv
import json

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from jaxvol import heston, mc
from jaxvol.mc import payoffs
from conftest import DATA

KEY = jax.random.key(2008)


def _cases():
    with open(DATA / "mc_andersen_cases.csv") as f:
        rows = [r for r in csv.reader(f) if not r[0].startswith("#")]
    header, rows = rows[0], rows[1:]
    table = {}
    for row in rows:
        rec = dict(zip(header, row))
        case = table.setdefault(rec["case"], {"strike": [], "ref": [], "ql": []})
        for name in ("kappa", "theta", "sigma", "rho", "v0", "expiry"):
            case[name] = float(rec[name])
        case["strike"].append(float(rec["strike"]))
        case["ref"].append(float(rec["price_jaxvol"]))
        case["ql"].append(float(rec["price_quantlib"]))
    return table


CASES = _cases()
REF = json.loads((DATA / "mc_references.json").read_text())
NAMES = ("I", "II", "III")


def _lanes(name):
    return jnp.array([CASES[n][name] for n in NAMES])


def test_reference_prices_agree_with_quantlib():
    # the references of the Monte Carlo tests (jaxvol.heston.price, written by
    # scripts/mc_reference_data.py and the csv's own generator) against QuantLib's analytic
    # engine, 1e-9 relative: far below any Monte Carlo error here
    for n in NAMES:
        np.testing.assert_allclose(CASES[n]["ref"], CASES[n]["ql"], rtol=1e-9)
    np.testing.assert_allclose(REF["physical"]["price"], REF["physical"]["quantlib"], rtol=1e-9)


def test_qe_m_andersen_cases_dt_one_eighth():
    # All three cases in one simulation: 15 years at dt = 1/8 (120 steps), observed after
    # 40, 80, 120 steps (T = 5, 10, 15); each case reads its own expiry's column.
    expiry = {"I": 10.0, "II": 15.0, "III": 5.0}
    dates = {5.0: 0, 10.0: 1, 15.0: 2}
    strikes = np.array([70.0, 100.0, 140.0])
    args = dict(strike=jnp.asarray(np.tile(strikes, 3)), is_call=jnp.ones(9, bool),
                date=jnp.asarray(np.repeat([0, 1, 2], 3)))
    result = mc.heston_price(KEY, payoffs.european, args, spot=100.0, rate=0.0, div=0.0,
                             v0=_lanes("v0"), kappa=_lanes("kappa"), theta=_lanes("theta"),
                             sigma=_lanes("sigma"), rho=_lanes("rho"), expiry=15.0, steps=120,
                             observe=(40, 80, 120), paths=32768, scheme="qe_m", devices=1)
    assert np.all(np.asarray(result.status) == 0)
    for lane, n in enumerate(NAMES):
        cols = slice(3 * dates[expiry[n]], 3 * dates[expiry[n]] + 3)
        price, stderr = np.asarray(result.price[lane, cols]), np.asarray(result.stderr[lane, cols])
        ref = np.asarray(CASES[n]["ref"])
        assert np.all(stderr < 0.35), (n, stderr)  # precise enough to see Euler's bias (> 1)
        assert np.all(np.abs(price - ref) < 3 * stderr), (n, price - ref, stderr)


def test_euler_first_order_bias():
    # Full-truncation Euler on cases I and II (Feller ratio 0.04 and 0.09), dt = T/16 and T/32:
    # its bias is far beyond the Monte Carlo error, roughly halves with dt (ratio in
    # [1.4, 2.8]: first order), and the Richardson extrapolation 2 b(dt/2) - b(dt) removes most
    # of it (it converges to the analytic price). Case III's bias (0.4 at T/32) is too close
    # to the error of 16384 paths to be resolved, so it is left out.
    lanes = {n: jnp.array([[CASES[c][n]] for c in ("I", "II")]) for n in
             ("v0", "kappa", "theta", "sigma", "rho", "expiry")}
    ref = np.array([CASES[c]["ref"][1] for c in ("I", "II")])
    bias, err = {}, {}
    expiry = lanes.pop("expiry")
    for steps in (16, 32):
        r = mc.heston_european(KEY, 100.0, expiry, spot=100.0, rate=0.0, div=0.0, is_call=True,
                               paths=16384, steps=steps, scheme="euler", devices=1, **lanes)
        bias[steps], err[steps] = np.asarray(r.price)[:, 0] - ref, np.asarray(r.stderr)[:, 0]
    coarse, fine = bias[16], bias[32]
    noise = np.hypot(err[16], err[32])
    assert np.all(fine > 4 * err[32]), (fine, err[32])  # a real, resolved bias
    assert np.all((coarse / fine > 1.4) & (coarse / fine < 2.8)), coarse / fine
    extrapolated = 2 * fine - coarse
    assert np.all(np.abs(extrapolated) < 0.5 * fine + 3 * 2 * noise), extrapolated


def _variance_moments(path, args):
    v = path["variance"][-1]
    return jnp.stack([v, (v - args["mean"]) ** 2], axis=-1)


def test_exact_step_cir_moments():
    # Case I variance (Feller 2 kappa theta / sigma^2 = 0.04: badly violated), T = 1 in four
    # exact steps: the simulated E[v_T] and E[(v_T - E v_T)^2] = Var[v_T] match the CIR
    # closed forms within 3 standard errors (the closed forms themselves against mpmath).
    p = dict(v0=0.04, kappa=0.5, theta=0.04, sigma=1.0)
    mean = heston.expected_variance(1.0, p["v0"], p["kappa"], p["theta"])
    var = heston.variance_of_variance(1.0, **p)
    mp_mean = p["theta"] + (p["v0"] - p["theta"]) * mpmath.exp(-p["kappa"])
    assert abs(float(mean) - float(mp_mean)) < 1e-15
    result = mc.heston_price(KEY, _variance_moments, {"mean": mean}, spot=100.0, rho=-0.9,
                             rate=0.0, div=0.0, expiry=1.0, steps=4, paths=65536,
                             scheme="exact", antithetic=False, devices=1, **p)
    est, se = np.asarray(result.price), np.asarray(result.stderr)
    assert abs(est[0] - mean) < 3 * se[0], (est[0], mean, se[0])
    assert abs(est[1] - var) < 3 * se[1], (est[1], var, se[1])
    assert se[1] < 0.05 * var  # the variance is resolved to 5%


def _terminal_state(path, args):
    return jnp.stack([path["spot"][-1], path["variance"][-1]], axis=-1)


def test_physical_measure_moments_and_conversion():
    # Q parameters and a market price of volatility risk lambda = -0.6 (Q variance reverts more
    # slowly to a higher level); under P the simulated E[v_T], E[S_T] match the closed forms
    # (P parameters from to_physical, spot drift mu) within 3 standard errors.
    q = dict(kappa=1.2, theta=0.06, sigma=0.6, rho=-0.7, v0=0.03)
    lam, mu, expiry = -0.6, 0.07, 2.0
    kappa_p, theta_p = heston.to_physical(q["kappa"], q["theta"], lam)
    np.testing.assert_allclose(heston.to_risk_neutral(kappa_p, theta_p, lam),
                               (q["kappa"], q["theta"]), rtol=1e-15)
    assert float(kappa_p) == pytest.approx(1.8) and float(theta_p) == pytest.approx(0.04)
    result = mc.heston_price(KEY, _terminal_state, None, spot=100.0, rate=0.0, div=0.0,
                             expiry=expiry, steps=16, paths=32768, measure="P", drift=mu,
                             vol_risk_premium=lam, devices=1, **q)
    est, se = np.asarray(result.price), np.asarray(result.stderr)
    assert abs(est[0] - 100.0 * np.exp(mu * expiry)) < 3 * se[0]
    ev = heston.expected_variance(expiry, q["v0"], kappa_p, theta_p)
    assert abs(est[1] - ev) < 3 * se[1], (est[1], ev, se[1])
    ev_q = heston.expected_variance(expiry, q["v0"], q["kappa"], q["theta"])
    assert abs(ev_q - ev) > 6 * se[1]  # the test can tell the measures apart
    # the Q parameters converted from P reprice to jaxvol.heston.price
    kq, tq = heston.to_risk_neutral(kappa_p, theta_p, lam)
    strikes = jnp.array([80.0, 100.0, 125.0])
    euro = mc.heston_european(KEY, strikes, expiry, spot=100.0, rate=0.02, div=0.01,
                              v0=q["v0"], kappa=kq, theta=tq, sigma=q["sigma"], rho=q["rho"],
                              is_call=True, paths=32768, steps=16, devices=1)
    ref = np.asarray(REF["physical"]["price"])  # jaxvol.heston.price of these Q parameters
    assert REF["physical"]["kappa"] == pytest.approx(float(kq))
    assert REF["physical"]["theta"] == pytest.approx(float(tq))
    assert np.all(np.abs(np.asarray(euro.price) - ref) < 3 * np.asarray(euro.stderr))


def test_integrated_variance_and_premium_closed_forms():
    # E[int v dt] against mpmath quadrature of E[v_t]; the premium is E_Q - E_P of the
    # annualised integrated variance, with either measure's parameters as input.
    v0, kq, tq, lam, t = 0.03, 1.2, 0.06, -0.6, 2.0
    quad = mpmath.quad(lambda s: tq + (v0 - tq) * mpmath.exp(-kq * s), [0, t])
    assert abs(float(heston.expected_integrated_variance(t, v0, kq, tq)) - float(quad)) < 1e-15
    quad, t = float(quad), float(t)
    vrp = heston.variance_risk_premium(t, v0=v0, kappa=kq, theta=tq, vol_risk_premium=lam)
    kp, tp = heston.to_physical(kq, tq, lam)
    kp_, tp_ = float(kp), float(tp)
    quad_p = mpmath.quad(lambda s: tp_ + (v0 - tp_) * mpmath.exp(-kp_ * s), [0, t]) / t
    np.testing.assert_allclose([vrp.fair_q, vrp.fair_p], [quad / t, float(quad_p)],
                               rtol=1e-13)
    assert float(vrp.premium) > 0  # lambda < 0: implied variance above expected realised
    from_p = heston.variance_risk_premium(t, v0=v0, kappa=kp, theta=tp, vol_risk_premium=lam,
                                          measure="P")
    np.testing.assert_allclose(from_p.premium, vrp.premium, rtol=1e-12)


EUROPEAN = dict(spot=100.0, rate=0.01, div=0.0, kappa=1.0, theta=0.05, sigma=0.8, rho=-0.6,
                is_call=True, steps=8)


def test_bitwise_reproducible_chunks_devices_batches():
    # identical bits for chunk sizes 4 and 3 (the last chunk of 3 runs past the 8 blocks),
    # for 1 and 8 host devices, and for a lane priced alone (same lane id) or in a batch
    v0 = jnp.linspace(0.02, 0.09, 8)
    kw = dict(EUROPEAN, v0=v0, paths=4096, block=512)
    base = mc.heston_european(KEY, 100.0, 1.0, devices=1, chunk=4, **kw)
    other_chunk = mc.heston_european(KEY, 100.0, 1.0, devices=1, chunk=3, **kw)
    eight = mc.heston_european(KEY, 100.0, 1.0, devices=8, chunk=4, **kw)
    assert len(jax.local_devices()) == 8
    alone = mc.heston_european(KEY, 100.0, 1.0, devices=1, chunk=4, lane=5,
                               **dict(kw, v0=v0[5]))
    for other in (other_chunk, eight):
        for field in ("price", "stderr", "stderr_plain", "status"):
            np.testing.assert_array_equal(getattr(base, field), getattr(other, field))
    assert float(alone.price) == float(base.price[5])
    assert float(alone.stderr) == float(base.stderr[5])
    assert np.all(np.diff(np.asarray(base.price)) > 0)  # lanes differ (v0 increasing)


def test_bad_lanes_isolated_values_and_gradients():
    # lanes 1-3 bad (NaN sigma, sigma <= 0, |rho| >= 1): NaN + BAD_INPUT there; lane 0's
    # price, stderr and gradient are bitwise those of an all-good batch with the same lane ids
    sigma_bad = jnp.array([0.8, jnp.nan, -0.1, 0.8])
    rho_bad = jnp.array([-0.6, -0.6, -0.6, -1.0])

    def run(sigma, rho, spot):
        return mc.heston_european(KEY, 100.0, 1.0, **dict(
            EUROPEAN, sigma=sigma, rho=rho, spot=spot, v0=0.04, paths=2048, block=512,
            scheme="euler"))

    spot = jnp.full(4, 100.0)
    bad = run(sigma_bad, rho_bad, spot)
    good = run(jnp.full(4, 0.8), jnp.full(4, -0.6), spot)
    assert np.isnan(np.asarray(bad.price[1:])).all()
    assert np.asarray(bad.status[1:]).tolist() == [int(mc.MCStatus.BAD_INPUT)] * 3
    assert float(bad.price[0]) == float(good.price[0])
    assert float(bad.stderr[0]) == float(good.stderr[0])

    def total(sigma, rho, spot):
        return jnp.nansum(run(sigma, rho, spot).price)

    g_bad = jax.grad(total, argnums=2)(sigma_bad, rho_bad, spot)
    g_good = jax.grad(total, argnums=2)(jnp.full(4, 0.8), jnp.full(4, -0.6), spot)
    assert float(g_bad[0]) == float(g_good[0])
    assert np.all(np.isfinite(np.asarray(g_bad)))
    assert np.all(np.asarray(g_bad[1:]) == 0.0)


GREEK_PARAMS = ("spot", "v0", "kappa", "theta", "sigma", "rho")


def test_pathwise_greeks_qe_smooth():
    # jax.grad through the simulation ("qe_m_smooth": differentiable branch switch) of an
    # at-the-money call. 32 replicate lanes (different lane ids, 2048 paths each) give 32
    # independent gradient estimates; their mean lies within 3 standard errors of jax.grad of
    # jaxvol.heston.price (the discretisation bias at dt = 1/16 is below that error), and the
    # pathwise gradient equals central bump-and-reprice under common random numbers (same key,
    # h = 1e-5 relative): the same estimator differentiated two ways, so in a typical lane they
    # agree to 1e-4 of the lanes' spread (FD error O(h^2)); a lane where a path crosses the
    # strike kink or the QE point mass within +-h may differ by O(1/paths), bounded by 0.1 of
    # the spread.
    lanes = 32
    base = dict(spot=100.0, v0=0.04, kappa=2.0, theta=0.05, sigma=0.5, rho=-0.7)

    def mc_price(values):
        kw = {n: values[n] for n in GREEK_PARAMS}
        return mc.heston_european(KEY, 100.0, 1.0, rate=0.01, div=0.0, is_call=True,
                                  paths=2048, steps=16, block=512, scheme="qe_m_smooth",
                                  **kw).price

    values = {n: jnp.full(lanes, v) for n, v in base.items()}
    grads = jax.grad(lambda v: jnp.sum(mc_price(v)))(values)
    exact = REF["greeks"]["grad"]  # jax.grad of jaxvol.heston.price (mc_reference_data.py)
    assert all(REF["greeks"][n] == v for n, v in base.items())
    for name in GREEK_PARAMS:
        g = np.asarray(grads[name])
        mean, se = g.mean(), g.std(ddof=1) / np.sqrt(lanes)
        assert abs(mean - float(exact[name])) < 3 * se, (name, mean, float(exact[name]), se)
        h = 1e-5 * max(abs(base[name]), 1.0)
        up = dict(values, **{name: values[name] + h})
        down = dict(values, **{name: values[name] - h})
        bump = (np.asarray(mc_price(up)) - np.asarray(mc_price(down))) / (2 * h)
        gap = np.abs(bump - g)
        assert np.median(gap) < 1e-4 * g.std(ddof=1) + 1e-9, (name, gap)
        assert np.all(gap < 0.1 * g.std(ddof=1)), (name, gap)


def test_variance_reduction_errors_and_paths_agree():
    # reference surface (jaxvol.heston.price in tests/data): antithetic + the two controls
    # (discounted S_T, the ATM-forward call priced by jaxvol.heston.price) stay within 3 of
    # their own standard errors of the analytic prices, and report a reduced error below the
    # plain one (the ATM strike is the control itself: a large reduction); heston_paths draws
    # the same paths as the estimators (its terminal spots reprice the plain estimate to
    # rounding, 1e-12 relative).
    s = REF["surface"]
    p = {n: s[n] for n in ("spot", "rate", "div", "v0", "kappa", "theta", "sigma", "rho")}
    strikes = jnp.array(s["strike"])
    ref = np.asarray(s["price"])
    # the second control's mean, the ATM-forward call, is jaxvol.heston.price at strike 100
    # (r = q = 0: forward = spot = 100), already in the reference data: passed as
    # control_price, the test does not compile the Fourier pricer
    assert p["rate"] == p["div"] == 0.0 and p["spot"] == s["strike"][1] == 100.0
    cv = mc.heston_european(KEY, strikes, 1.0, is_call=True, paths=8192, steps=16,
                            control_variate=True, control_price=s["price"][1], devices=1, **p)
    plain = mc.heston_european(KEY, strikes, 1.0, is_call=True, paths=8192, steps=16,
                               devices=1, **p)
    assert np.all(np.abs(np.asarray(cv.price) - ref) < 3 * np.asarray(cv.stderr))
    assert np.all(np.asarray(cv.stderr) < 0.7 * np.asarray(plain.stderr))
    assert float(cv.stderr[1]) < 0.2 * float(plain.stderr[1])
    assert np.all(np.asarray(plain.stderr) < np.asarray(plain.stderr_plain))  # antithetic
    np.testing.assert_array_equal(cv.stderr_plain, plain.stderr_plain)
    paths = mc.heston_paths(KEY, expiry=1.0, steps=16, paths=8192, **p)
    assert paths.spot.shape == (1, 8192) and float(paths.times[-1]) == 1.0
    terminal = np.asarray(paths.spot[-1])
    again = np.maximum(terminal[:, None] - np.asarray(strikes)[None, :], 0.0).mean(0)
    np.testing.assert_allclose(again, plain.price, rtol=1e-12)
