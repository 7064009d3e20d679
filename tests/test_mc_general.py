"""jaxvol.mc.simulate: general stochastic-volatility models from user alpha/beta/phi.

Tolerances: 3 standard errors of the reported estimator (fixed seed), or, where two runs use
the same normals and the same arithmetic up to rounding, a bound far below the Monte Carlo
error (stated per test).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvol import heston, mc
from jaxvol.mc import payoffs
from conftest import DATA

KEY = jax.random.key(42)
REF = json.loads((DATA / "mc_references.json").read_text())
SURFACE = REF["surface"]  # spot 100, r = q = 0, v0 0.04, kappa 1.5, theta 0.04, sigma 0.5, rho -0.7
STRIKES = jnp.array(SURFACE["strike"])
CALLS = dict(strike=STRIKES, is_call=jnp.ones(3, bool))
BASE = dict(spot=100.0, v0=0.04, rho=-0.7, rate=0.0, div=0.0, expiry=1.0)
# lambda = 0 (no market price of volatility risk, as HESTON's default): the same parameter tree
# as the Q run of test_heston_market_price_of_vol_risk_in_general_path, so both tests run one
# compiled program (phi = 0 sqrt(v) = 0 leaves the drift bitwise alpha)
HESTON_PARAMS = dict(kappa=1.5, theta=0.04, eta=0.5, **{"lambda": 0.0})


@pytest.fixture(scope="module")
def dedicated():
    """jaxvol.mc's dedicated Heston full-truncation Euler on KEY: the reference of the tests
    that reproduce it with the general path (same normals)."""
    return mc.heston_price(KEY, payoffs.european, CALLS, kappa=1.5, theta=0.04, sigma=0.5,
                           steps=32, paths=16384, scheme="euler", devices=1, **BASE)


def _terminal(path, args):
    return jnp.stack([path["spot"][-1], path["variance"][-1]], axis=-1)


def test_general_heston_euler_equals_dedicated_euler(dedicated):
    # same key, same normals, same full-truncation Euler: the general path with Heston's
    # alpha, beta reproduces jaxvol.mc's dedicated Heston Euler up to rounding (1e-3 of a
    # standard error, far below any scheme difference)
    general = mc.simulate(KEY, mc.HESTON, HESTON_PARAMS, payoffs.european, CALLS, steps=32,
                          paths=16384, scheme="euler", devices=1, **BASE)
    assert np.all(np.abs(np.asarray(general.price - dedicated.price))
                  < 1e-3 * np.asarray(dedicated.stderr))


def test_general_milstein_agrees_with_qe_m():
    # the higher-order scheme of the general path (Milstein) with Heston's alpha, beta against
    # the dedicated QE-M (other normals: independent estimates), within 3 combined standard
    # errors. Feller holds here (2 kappa theta / eta^2 = 1.8): with it badly violated
    # (the reference surface, 0.48) full-truncation Milstein keeps a bias of ~0.1 at dt = 1/32
    # (measured), which is what QE-M is for.
    params = dict(kappa=2.0, theta=0.04, eta=0.3)
    milstein = mc.simulate(KEY, mc.HESTON, params, payoffs.european, CALLS, steps=32,
                           paths=16384, scheme="milstein", devices=1, **BASE)
    qe = mc.heston_price(jax.random.key(7), payoffs.european, CALLS, kappa=2.0, theta=0.04,
                         sigma=0.3, steps=32, paths=16384, devices=1, **BASE)
    m, sm = np.asarray(milstein.price), np.asarray(milstein.stderr)
    q, sq = np.asarray(qe.price), np.asarray(qe.stderr)
    assert np.all(np.abs(m - q) < 3 * np.hypot(sm, sq)), (m - q, np.hypot(sm, sq))


def test_heston_market_price_of_vol_risk_in_general_path(dedicated):
    # HESTON with P parameters and phi = lambda sqrt(v): under Q its drift is kappa_P
    # (theta_P - v) - lambda v, i.e. Heston with to_risk_neutral's parameters. Same normals,
    # same Euler: equal to the dedicated Heston Euler with the Q parameters up to rounding
    # (1e-3 of a standard error).
    lam = -0.5
    kappa_p, theta_p = heston.to_physical(1.5, 0.04, lam)
    params = dict(kappa=kappa_p, theta=theta_p, eta=0.5, **{"lambda": lam})
    result = mc.simulate(KEY, mc.HESTON, params, payoffs.european, CALLS, steps=32,
                         paths=16384, scheme="euler", devices=1, **BASE)
    assert np.all(np.abs(np.asarray(result.price - dedicated.price))
                  < 1e-3 * np.asarray(dedicated.stderr))
    physical = mc.simulate(KEY, mc.HESTON, params, payoffs.european, CALLS, steps=32,
                           paths=16384, scheme="euler", measure="P", devices=1, **BASE)
    assert np.all(np.abs(np.asarray(physical.price - dedicated.price))
                  > 3 * np.asarray(dedicated.stderr))  # the measure matters


@pytest.mark.parametrize("model,params", [
    (mc.THREE_HALVES, dict(kappa=2.0, theta=0.05, eta=1.0)),
    (mc.GARCH, dict(kappa=2.0, theta=0.05, eta=1.0)),
])
def test_ready_made_models_martingale_and_schemes_agree(model, params):
    # 3/2 and GARCH diffusion (no simple closed form for options): E[S_T] = forward within 3
    # standard errors (the log-spot step is exact given v), Euler and Milstein agree within 3
    # combined errors; for GARCH (linear drift) E[v_T] = theta + (v0 - theta) e^{-kappa T}
    out = {}
    for scheme in ("euler", "milstein"):
        out[scheme] = mc.simulate(KEY if scheme == "euler" else jax.random.key(3), model,
                                  params, _terminal, None, steps=32, paths=16384,
                                  scheme=scheme, devices=1, **dict(BASE, rate=0.03))
    for r in out.values():  # _terminal is not discounted
        est, se = np.asarray(r.price), np.asarray(r.stderr)
        assert abs(est[0] - 100.0 * np.exp(0.03)) < 3 * se[0], (est[0], se[0])
    e, m = out["euler"], out["milstein"]
    assert np.all(np.abs(np.asarray(e.price - m.price))
                  < 3 * np.hypot(np.asarray(e.stderr), np.asarray(m.stderr)))
    if model is mc.GARCH:
        ev = heston.expected_variance(1.0, 0.04, 2.0, 0.05)
        assert abs(float(m.price[1]) - float(ev)) < 3 * float(m.stderr[1])


def test_bad_lanes_and_static_errors():
    result = mc.simulate(KEY, mc.GARCH, dict(kappa=2.0, theta=0.05, eta=jnp.array([1.0, -1.0])),
                         _terminal, None, steps=4, paths=1024, devices=1,
                         **dict(BASE, rho=jnp.array([-0.5, -0.5])))
    assert np.asarray(result.status).tolist() == [[0, 0], [1, 1]]
    assert np.isnan(np.asarray(result.price[1])).all()
    with pytest.raises(ValueError, match="scheme"):
        mc.simulate(KEY, mc.GARCH, dict(kappa=2.0, theta=0.05, eta=1.0), _terminal, None,
                    steps=4, paths=1024, scheme="qe_m", **BASE)
    with pytest.raises(ValueError, match="eta"):
        mc.simulate(KEY, mc.GARCH, dict(kappa=2.0, theta=0.05), _terminal, None, steps=4,
                    paths=1024, **BASE)
