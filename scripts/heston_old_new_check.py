"""Compare Heston prices, gradients and calibrated parameters of two checkouts.

    PYTHONPATH=<old checkout> python scripts/heston_old_new_check.py dump old.npz
    PYTHONPATH=<new checkout> python scripts/heston_old_new_check.py dump new.npz
    python scripts/heston_old_new_check.py compare old.npz new.npz

``dump`` evaluates, on the test data: the prices of tests/data/heston_prices.csv and
heston_box_mpmath.csv (one contour per option), a shared-contour surface (4 parameter sets x
3 expiries x 24 strikes, default 96 nodes / 8 contours, and the fit quadrature 64 / 4), the
gradients of that surface's prices in (v0, kappa, theta, sigma, rho, spot, strike) (reverse
mode) and the forward-mode Jacobian the calibration uses, and the calibrated parameters of
tests/test_heston_calibration.py (Cui et al.'s surface; the five-lane batch; the Feller fits).
``compare`` prints the largest absolute and relative difference per quantity.
"""

import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
PARAMS = ("v0", "kappa", "theta", "sigma", "rho")


def _frame_prices(price, df):
    return price(jnp.asarray(df.strike.values), jnp.asarray(df.expiry.values),
                 spot=jnp.asarray(df.spot.values, float), rate=jnp.asarray(df.rate.values, float),
                 div=jnp.asarray(df["div"].values, float), v0=jnp.asarray(df.v0.values),
                 kappa=jnp.asarray(df.kappa.values, float), theta=jnp.asarray(df.theta.values),
                 sigma=jnp.asarray(df.sigma.values), rho=jnp.asarray(df.rho.values),
                 is_call=jnp.asarray(df.is_call.values == 1))


def dump(path):
    import pandas as pd

    from jaxvol import heston
    from jaxvol.calibrate import LMConfig

    out = {}
    price = jax.jit(heston.price, static_argnames=("nodes", "contours"))
    for name in ("heston_prices", "heston_box_mpmath"):
        out[f"price_{name}"] = _frame_prices(price, pd.read_csv(DATA / f"{name}.csv",
                                                                comment="#"))
    sets = jnp.asarray([[0.04, 1.5, 0.05, 0.6, -0.7], [0.02, 4.0, 0.03, 0.3, -0.3],
                        [0.09, 0.8, 0.06, 0.9, -0.8], [0.01, 2.5, 0.02, 0.2, 0.2]])
    strikes = jnp.asarray(np.linspace(40.0, 250.0, 24))
    expiry = jnp.asarray([[0.05], [0.5], [5.0]])

    def surface(params, spot, strikes, nodes, contours):
        named = {n: params[:, i, None, None] for i, n in enumerate(PARAMS)}
        return heston.price(strikes, expiry, spot=spot, rate=0.02, div=0.01,
                            is_call=strikes >= 100.0, nodes=nodes, contours=contours, **named)

    for nodes, contours in ((96, 8), (64, 4)):
        tag = f"{nodes}_{contours}"
        out[f"price_surface_{tag}"] = jax.jit(surface, static_argnums=(3, 4))(
            sets, 100.0, strikes, nodes, contours)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(surface(*a, nodes, contours)),
                                 argnums=(0, 1, 2)))(sets, 100.0, strikes)
        for name, g in zip(("params", "spot", "strike"), grads):
            out[f"grad_{name}_{tag}"] = g
    # the calibration's forward-mode Jacobian of one surface's prices in the parameters
    fit = heston.model_surface(sets, (1 / 12, 0.25, 0.5, 1.0, 2.0), (-2.0, -1.0, 0.0, 1.0, 2.0),
                               spot=100.0, rate=0.02, div=0.01)
    jac = jax.jit(jax.vmap(jax.jacfwd(heston.surface_prices)))(
        sets, fit.strike, fit.expiry, fit.spot, fit.rate, fit.div, fit.is_call)
    out["jacfwd_surface_prices"] = jac
    out["model_surface_quotes"] = fit.quote

    # calibrations of tests/test_heston_calibration.py
    df = pd.read_csv(DATA / "cui_calibration.csv", comment="#")
    cui_expiry = df.expiry.unique()
    shape = (1, len(cui_expiry), len(df) // len(cui_expiry))
    cui = heston.Surface(
        strike=jnp.asarray(df.strike.values).reshape(shape),
        expiry=jnp.asarray(cui_expiry)[None],
        quote=jnp.asarray(df.call_price.values).reshape(shape), is_call=jnp.ones(shape, bool),
        spot=jnp.ones(1), rate=jnp.full((1, len(cui_expiry)), 0.02),
        div=jnp.zeros((1, len(cui_expiry))), mask=jnp.ones(shape, bool))
    result = heston.calibrate(cui, jnp.asarray([[0.2, 1.2, 0.2, 0.3, -0.6]]), objective="price",
                              lower=None, upper=None, config=LMConfig(max_iterations=60))
    out["fit_cui"] = result.params
    five = heston.model_surface(jnp.concatenate([sets, sets[:1]]), (1 / 12, 0.25, 0.5, 1.0, 2.0),
                                (-2.0, -1.0, 0.0, 1.0, 2.0), spot=100.0, rate=0.02, div=0.01)
    bad = five._replace(quote=five.quote.at[4].set(jnp.nan))
    config = LMConfig(max_iterations=80)
    result = heston.calibrate(bad, config=config)
    out["fit_batch"] = result.params[:4]
    out["fit_batch_status"] = result.status
    feller = heston.model_surface(sets[jnp.asarray([2] * 5)], (1 / 12, 0.25, 0.5, 1.0, 2.0),
                                  (-2.0, -1.0, 0.0, 1.0, 2.0), spot=100.0, rate=0.02, div=0.01)
    out["fit_feller_free"] = heston.calibrate(feller, config=config).params
    out["fit_feller_penalised"] = heston.calibrate(feller, feller_weight=1e4,
                                                   config=config).params
    np.savez(path, **{k: np.asarray(v) for k, v in out.items()})
    print(f"wrote {len(out)} arrays to {path}")


def compare(old_path, new_path):
    old, new = np.load(old_path), np.load(new_path)
    assert sorted(old.files) == sorted(new.files)
    print(f"{'quantity':28s} {'max |old - new|':>16s} {'max relative':>14s}")
    for name in old.files:
        a, b = old[name].astype(float), new[name].astype(float)
        same_nan = np.array_equal(np.isnan(a), np.isnan(b))
        finite = np.isfinite(a) & np.isfinite(b)
        diff = np.abs(a - b)[finite]
        rel = diff / np.maximum(np.abs(a[finite]), 1e-300)
        print(f"{name:28s} {diff.max(initial=0):16.3g} {rel.max(initial=0):14.3g}"
              + ("" if same_nan else "  NaN PATTERN DIFFERS"))


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
