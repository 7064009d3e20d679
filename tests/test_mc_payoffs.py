"""jaxvol.mc.payoffs: digital, Asian, barrier (+ BGK), forward start, realised variance.

Where the payoff has no Heston closed form the Heston parameters are taken to the GBM limit
(v0 = theta, sigma = 1e-4: the variance stays within 1e-4 of theta), and the reference is a
Black-Scholes closed form or an exact-GBM numpy simulation (independent code and numbers).
Tolerances: 3 standard errors of the difference (fixed seeds).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm

from jaxvol import heston, mc
from jaxvol.mc import payoffs
from conftest import DATA

KEY = jax.random.key(11)
REF = json.loads((DATA / "mc_references.json").read_text())
VOL = 0.2
GBM = dict(spot=100.0, v0=VOL ** 2, kappa=1.0, theta=VOL ** 2, sigma=1e-4, rho=0.0, rate=0.03,
           div=0.01)
STEPS = 50


def _bs_call(s, k, t, r, q, vol):
    d1 = (np.log(s / k) + (r - q + 0.5 * vol ** 2) * t) / (vol * np.sqrt(t))
    return s * np.exp(-q * t) * norm.cdf(d1) - k * np.exp(-r * t) * norm.cdf(d1 - vol * np.sqrt(t))


def _gbm_paths(n, steps, t, seed=5):
    rng = np.random.default_rng(seed)
    dt = t / steps
    z = rng.standard_normal((n, steps))
    logs = np.cumsum((GBM["rate"] - GBM["div"] - 0.5 * VOL ** 2) * dt + VOL * np.sqrt(dt) * z, 1)
    return GBM["spot"] * np.exp(logs)


def _run(payoff, args, observe=None, **kw):
    options = dict(GBM, expiry=1.0, steps=STEPS, paths=32768, devices=1, observe=observe)
    options.update(kw)
    return mc.heston_price(KEY, payoff, args, **options)


ALL_DATES = tuple(range(1, STEPS + 1))
DIGITAL_STRIKES = (90.0, 110.0)
FORWARD_MONEYNESS = (0.9, 1.1)


def _gbm_payoffs(path, args):
    # the digital, Asian, barrier and forward-start payoffs of the tests below as columns of one
    # payoff: one compiled program and one set of paths for four tests (each asserts on its own
    # columns, which are exactly what the single payoffs give on these paths)
    return jnp.concatenate([
        payoffs.digital(path, args["digital"]),
        payoffs.asian(path, args["vanilla"]),
        payoffs.barrier(path, args["barrier"]),
        payoffs.forward_start(path, args["forward"]),
    ], axis=1)


COLUMNS = dict(digital=slice(0, 2), asian=slice(2, 3), barrier=slice(3, 4), forward=slice(4, 6))


@functools.lru_cache(maxsize=None)
def _gbm_run(correction):
    vanilla = dict(strike=jnp.array([100.0]), is_call=jnp.array([True]))
    args = dict(
        digital=dict(strike=jnp.array(DIGITAL_STRIKES), is_call=jnp.array([True, False])),
        vanilla=vanilla,
        barrier=dict(vanilla, barrier=90.0, up=False, knock_in=False, correction=correction),
        forward=dict(start=jnp.asarray(24), moneyness=jnp.array(FORWARD_MONEYNESS),
                     is_call=jnp.ones(2, bool)))
    return _run(_gbm_payoffs, args, ALL_DATES)


def _columns(name, correction=False):
    result = _gbm_run(correction)
    return result._replace(price=result.price[COLUMNS[name]],
                           stderr=result.stderr[COLUMNS[name]])


def test_digital_closed_form():
    # cash-or-nothing call and put in the GBM limit: e^{-rT} N(+-d2), within 3 standard errors
    result = _columns("digital")  # strikes 90 (call), 110 (put)
    t = 1.0
    d2 = [(np.log(100.0 / k) + (GBM["rate"] - GBM["div"] - 0.5 * VOL ** 2) * t)
          / (VOL * np.sqrt(t)) for k in (90.0, 110.0)]
    ref = np.exp(-GBM["rate"]) * np.array([norm.cdf(d2[0]), norm.cdf(-d2[1])])
    assert np.all(np.abs(np.asarray(result.price) - ref) < 3 * np.asarray(result.stderr))


def test_asian_and_discrete_barrier_against_exact_gbm_simulation():
    # arithmetic Asian (50 fixings) and a discretely monitored down-and-out call vs an exact
    # GBM simulation in numpy (200,000 paths): within 3 combined standard errors
    # (strike 100 call; barrier 90 down-and-out, no correction: _gbm_run)
    asian, barrier = _columns("asian"), _columns("barrier")
    paths = _gbm_paths(200_000, STEPS, 1.0)
    disc = np.exp(-GBM["rate"])
    ref_asian = disc * np.maximum(paths.mean(1) - 100.0, 0.0)
    ref_barrier = disc * np.where(paths.min(1) > 90.0, np.maximum(paths[:, -1] - 100.0, 0), 0)
    for r, ref in ((asian, ref_asian), (barrier, ref_barrier)):
        gap = abs(float(r.price[0]) - ref.mean())
        assert gap < 3 * np.hypot(float(r.stderr[0]), ref.std() / np.sqrt(ref.size)), gap


def test_bgk_correction_prices_the_continuous_barrier():
    # down-and-out call, barrier 90 below strike 100: the continuously monitored closed form
    # (Merton / Reiner-Rubinstein, C(S, K) - (H/S)^{2 lambda - 2} C(H^2/S, K)) is matched by
    # the BGK-corrected discrete simulation within 3 standard errors plus BGK's own o(1/sqrt(m))
    # error (1% here), while the uncorrected one is more than 5 standard errors above it
    s, k, h, t, r, q = 100.0, 100.0, 90.0, 1.0, GBM["rate"], GBM["div"]
    lam = (r - q + 0.5 * VOL ** 2) / VOL ** 2
    exact = _bs_call(s, k, t, r, q, VOL) - (h / s) ** (2 * lam - 2) * _bs_call(h * h / s, k, t,
                                                                             r, q, VOL)
    # (strike k, barrier h, down-and-out: _gbm_run)
    corrected = _columns("barrier", correction=True)
    plain = _columns("barrier", correction=False)
    se = float(corrected.stderr[0])
    assert abs(float(corrected.price[0]) - exact) < 3 * se + 0.01 * exact
    assert float(plain.price[0]) - exact > 5 * float(plain.stderr[0])


def test_forward_start_call_closed_form():
    # (S_T - m S_t0)^+ with t0 = 0.5: in the GBM limit S0 e^{-q t0} BS(1, m, T - t0)
    result = _columns("forward")  # start = observation 24 (t0 = 0.5), moneyness 0.9, 1.1
    ref = [100.0 * np.exp(-GBM["div"] * 0.5) * _bs_call(1.0, m, 0.5, GBM["rate"], GBM["div"], VOL)
           for m in (0.9, 1.1)]
    assert np.all(np.abs(np.asarray(result.price) - ref) < 3 * np.asarray(result.stderr))


def test_realized_variance_matches_model_free_fair_variance():
    # Heston (reference surface parameters, r = 0), 252 daily fixings: E[realised variance]
    # from QE-M paths vs the model-free fair variance of jaxvol.indices' replication on
    # jaxvol.heston.price's smile (tests/data), and vs the analytic fair_variance; within 3
    # standard errors plus the replication's strike-grid error (measured: below 2e-4 here)
    s = REF["surface"]
    p = dict(spot=100.0, rate=0.0, div=0.0, v0=s["v0"], kappa=s["kappa"], theta=s["theta"],
             sigma=s["sigma"], rho=s["rho"])
    rv = mc.heston_price(KEY, payoffs.realized_variance, dict(strike=jnp.zeros(1)),
                         expiry=1.0, steps=252, paths=16384, observe=tuple(range(1, 253)),
                         devices=1, **p)
    fair = float(heston.fair_variance(1.0, p["v0"], p["kappa"], p["theta"]))
    # jaxvol.indices.varswap.replication_variance of jaxvol.heston.price calls and puts on
    # strikes 20..400 step 1 (scripts/mc_reference_data.py: the Fourier pricer's compile costs
    # more than this test)
    replicated = REF["varswap"]["replicated"]
    assert abs(replicated - fair) < 2e-4
    se = float(rv.stderr[0])
    assert abs(float(rv.price[0]) - replicated) < 3 * se + 2e-4, (float(rv.price[0]), replicated)
    assert se < 0.02 * fair
