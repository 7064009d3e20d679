"""Writes tests/data/mc_references.json: the analytic values the Monte Carlo tests compare with.

Sources: jaxvol.heston.price (Fourier, 1e-10 relative; cross-checked here against QuantLib's
AnalyticHestonEngine) and jax.grad of it for the greeks. Kept out of the tests because
compiling the Fourier pricer costs more than the simulations it checks.

    PYTHONPATH=$PWD /work/venv/bin/python scripts/mc_reference_data.py
"""

import json
import pathlib

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import QuantLib as ql  # noqa: E402

from jaxvol import heston, indices  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "mc_references.json"


def quantlib_call(strike, expiry, spot, rate, div, v0, kappa, theta, sigma, rho):
    today = ql.Date(1, 1, 2020)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    r = ql.YieldTermStructureHandle(ql.FlatForward(today, rate, dc))
    q = ql.YieldTermStructureHandle(ql.FlatForward(today, div, dc))
    process = ql.HestonProcess(r, q, ql.QuoteHandle(ql.SimpleQuote(spot)), v0, kappa, theta,
                               sigma, rho)
    option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, strike),
                              ql.EuropeanExercise(today + int(round(expiry * 365))))
    option.setPricingEngine(ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-13, 100000))
    return option.NPV()


def main():
    out = {"source": "jaxvol.heston.price / jax.grad of it (scripts/mc_reference_data.py); "
                     "quantlib: AnalyticHestonEngine, expiry = round(365 T) days ACT/365F"}
    physical = dict(spot=100.0, rate=0.02, div=0.01, v0=0.03, kappa=1.2, theta=0.06,
                    sigma=0.6, rho=-0.7)
    strikes = [80.0, 100.0, 125.0]
    out["physical"] = dict(physical, expiry=2.0, strike=strikes, price=[
        float(heston.price(k, 2.0, is_call=True, **physical)) for k in strikes], quantlib=[
        quantlib_call(k, 2.0, **physical) for k in strikes])
    greek = dict(spot=100.0, v0=0.04, kappa=2.0, theta=0.05, sigma=0.5, rho=-0.7)
    fixed = dict(rate=0.01, div=0.0, is_call=True)
    value, grads = jax.value_and_grad(lambda p: heston.price(100.0, 1.0, **fixed, **p))(
        {n: jnp.asarray(v) for n, v in greek.items()})
    out["greeks"] = dict(greek, strike=100.0, expiry=1.0, rate=0.01, div=0.0,
                         price=float(value), grad={n: float(g) for n, g in grads.items()})
    surface = dict(spot=100.0, rate=0.0, div=0.0, v0=0.04, kappa=1.5, theta=0.04, sigma=0.5,
                   rho=-0.7)
    out["surface"] = dict(surface, expiry=1.0, strike=[80.0, 100.0, 120.0], price=[
        float(heston.price(k, 1.0, is_call=True, **surface)) for k in (80.0, 100.0, 120.0)])
    strikes = jnp.linspace(20.0, 400.0, 381)
    calls = heston.price(strikes, 1.0, is_call=True, **surface)
    puts = heston.price(strikes, 1.0, is_call=False, **surface)
    replicated = indices.varswap.replication_variance(strikes, calls, puts,
                                                      jnp.ones(381, bool), 100.0, 1.0, 1.0,
                                                      100.0, 1.0)
    out["varswap"] = dict(surface, expiry=1.0, strikes="20..400 step 1", replicated=float(
        replicated), fair_variance=float(heston.fair_variance(1.0, 0.04, 1.5, 0.04)))
    print("varswap", out["varswap"])
    OUT.write_text(json.dumps(out, indent=1))
    for name in ("physical",):
        print(name, out[name]["price"], out[name]["quantlib"])
    print("written", OUT)


if __name__ == "__main__":
    main()
