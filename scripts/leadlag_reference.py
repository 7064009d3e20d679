"""Make tests/data/leadlag_package_reference.npz: the pip package lead-lag 2.3 on fixed data.

The package (https://github.com/philipperemy/lead-lag, `pip install lead-lag==2.3`; it builds
a Cython extension, so it is not a test dependency) computes the HRY contrast one lag at a
time: ``lead_lag.lead_lag_impl.shifted_modified_hy_estimator(x, y, t_x, t_y, k, normalize)``
with integer tick times (here milliseconds), x/y dense on the integer grid (NaN between ticks),
and returns |sum dx dy 1{overlap}| / ((||dx|| + 1e-8)(||dy|| + 1e-8)); its lag is the argmax
over the lag range. This script stores the data, the lags, the package's contrast at every
lag and its argmax, for tests/test_leadlag_package.py.

Run: PYTHONPATH=$PWD /work/venv/bin/python scripts/leadlag_reference.py
"""

from __future__ import annotations

import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"


def bachelier_ms(seed=20261201, steps=20_000, n_x=2_000, n_y=3_000, rho=0.8, lag_ms=120):
    """Correlated random walks on a 1 ms grid, y following x by ``lag_ms``; Poisson-like
    (uniform without replacement) observation times, as the package's own Bachelier data."""
    rng = np.random.default_rng(seed)
    total = steps + lag_ms
    b1 = rng.normal(size=total)
    b2 = rho * b1 + np.sqrt(1 - rho ** 2) * rng.normal(size=total)
    x = np.cumsum(b1[lag_ms:])
    y = np.cumsum(b2[:steps])          # y's step at t is x's step at t - lag_ms
    t_x = np.sort(rng.choice(steps, n_x, replace=False))
    t_y = np.sort(rng.choice(steps, n_y, replace=False))
    return t_x, x[t_x], t_y, y[t_y], lag_ms


def main():
    import importlib.metadata

    from lead_lag.lead_lag_impl import shifted_modified_hy_estimator

    t_x, x, t_y, y, lag_ms = bachelier_ms()
    steps = int(max(t_x[-1], t_y[-1])) + 1
    dense_x = np.full(steps, np.nan)
    dense_x[t_x] = x
    dense_y = np.full(steps, np.nan)
    dense_y[t_y] = y
    lags = np.arange(-300, 301)
    values = np.array([shifted_modified_hy_estimator(dense_x, dense_y, t_x.astype(np.int64),
                                                     t_y.astype(np.int64), int(k), True)
                       for k in lags])
    version = importlib.metadata.version("lead-lag")
    np.savez(OUT / "leadlag_package_reference.npz", t_x_ms=t_x, x=x, t_y_ms=t_y, y=y,
             lags_ms=lags, contrast=values, lag_ms=lags[np.argmax(values)], true_lag_ms=lag_ms,
             source=np.array(f"lead-lag {version} (pip), shifted_modified_hy_estimator, "
                             "normalize=True; scripts/leadlag_reference.py"))
    print(f"lead-lag {version}: argmax lag {lags[np.argmax(values)]} ms (truth {lag_ms} ms)")


if __name__ == "__main__":
    main()
