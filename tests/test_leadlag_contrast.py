"""Hayashi–Yoshida covariance and the HRY contrast against brute force, closed forms and the
pip package lead-lag 2.3 (stored output, tests/data/leadlag_package_reference.npz)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from jaxvol import leadlag
from jaxvol.leadlag import LeadLagOptions, LeadLagStatus


def brute_force(t_x, x, t_y, y, lags, tol=0.0):
    """O(n m) per lag: sum of dx_i dy_j over pairs whose intervals, y shifted by -lag, overlap
    by more than ``tol``; exactly rounded sums (math.fsum)."""
    dx, dy = np.diff(x), np.diff(y)
    prod = dx[:, None] * dy[None, :]
    out = []
    for lag in lags:
        overlap = (np.minimum(t_x[1:, None], t_y[None, 1:] - lag)
                   - np.maximum(t_x[:-1, None], t_y[None, :-1] - lag))
        out.append(math.fsum(prod[overlap > tol]))
    return np.array(out)


# One padded shape for the default-option contrast calls, so this file compiles that program
# once (the package reference's: 2000 x ticks, 3000 y ticks, 601 lags). Shorter series are
# padded with masked slots, shorter lag grids with copies of their last lag.
N_X, N_Y, N_LAGS = 2000, 3000, 601


def padded(values, size, fill=0.0):
    return np.concatenate([values, np.full(size - values.size, fill)])


def lanes(*pairs):
    """Stack (t_x, x, t_y, y) pairs into the standard padded two-lane batch, with masks."""
    out = []
    for k, size in ((0, N_X), (1, N_X), (2, N_Y), (3, N_Y)):
        out.append(np.stack([padded(p[k], size) for p in pairs]))
    mask_x = np.stack([np.arange(N_X) < p[0].size for p in pairs])
    mask_y = np.stack([np.arange(N_Y) < p[2].size for p in pairs])
    return out, mask_x, mask_y


def curve(t_x, x, t_y, y, lags, second=None):
    """leadlag.contrast on the standard padded two-lane shape (lane 1: ``second`` or a copy);
    lane 0's (contrast, correlation, status), or both lanes' if ``second`` is given."""
    lags = np.asarray(lags, float)
    arrays, mask_x, mask_y = lanes((t_x, x, t_y, y), second or (t_x, x, t_y, y))
    got = leadlag.contrast(*arrays, padded(lags, N_LAGS, lags[-1]), mask_x=mask_x,
                           mask_y=mask_y)
    k = lags.size
    out = (np.asarray(got.contrast)[:, :k], np.asarray(got.correlation)[:, :k],
           np.asarray(got.status))
    return out if second is not None else tuple(v[0] for v in out)


def random_pair(seed, n=200, m=300, span=100.0, grid=None):
    rng = np.random.default_rng(seed)
    if grid is None:
        t_x, t_y = np.sort(rng.uniform(0, span, n)), np.sort(rng.uniform(0, span, m))
    else:  # ticks on a grid of `grid` seconds: endpoints coincide with lags
        cells = int(span / grid)
        t_x = np.sort(rng.choice(cells, n, replace=False)) * grid
        t_y = np.sort(rng.choice(cells, m, replace=False)) * grid
    return t_x, np.cumsum(rng.normal(size=n)), t_y, np.cumsum(rng.normal(size=m))


def test_one_pass_contrast_equals_brute_force_at_every_lag():
    # Float times (no ties) and an irregular lag grid; then times on a 10 ms grid with lags on
    # the same grid, where interval ends coincide exactly at many lags (the tie tolerance,
    # 1e-9 s by default, must make "touching" never count). Tolerance 1e-12 relative at every
    # lag: the reference is exactly rounded, the one-pass sum's rounding is ~1e-14 here.
    t_x, x, t_y, y = random_pair(0)
    lags = np.sort(np.concatenate([np.linspace(-6, 6, 25), [-0.3, 0.0, 0.04, 2.5]]))
    got, corr, status = curve(t_x, x, t_y, y, lags)
    want = brute_force(t_x, x, t_y, y, lags)
    assert status == 0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    scale = np.sqrt(np.sum(np.diff(x) ** 2) * np.sum(np.diff(y) ** 2))
    np.testing.assert_allclose(corr, want / scale, rtol=1e-12)

    t_x, x, t_y, y = random_pair(1, grid=0.01, span=30.0)
    lags = np.arange(-100, 101, 4) * 0.01
    got, _, _ = curve(t_x, x, t_y, y, lags)
    want = brute_force(np.round(t_x / 0.01), x, np.round(t_y / 0.01), y,
                       np.round(lags / 0.01))  # the same sums in integer units: exact ties
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["exact", "grid"])
def test_grid_contrast_engines_equal_brute_force_on_binned_times(method):
    # contrast_grid floors times to the resolution; on ticks already on that grid it is the
    # brute-force sum on the lag grid. The pair sweep is exact to 1e-12 relative at every lag;
    # the FFT engine rounds at ~1e-16 of the spectrum's norm, i.e. a relative 1e-12 of the
    # curve's largest value (asserted), not of each near-zero value.
    t_x, x, t_y, y = random_pair(2, grid=0.01, span=30.0)
    got = grid_curve(t_x, x, t_y, y, method)
    cells = np.arange(-60, 61)
    want = brute_force(np.round(t_x / 0.01), x, np.round(t_y / 0.01), y, cells)
    np.testing.assert_allclose(np.asarray(got.lags), cells * 0.01, rtol=1e-15, atol=1e-15)
    if method == "exact":
        np.testing.assert_allclose(np.asarray(got.contrast), want, rtol=1e-12, atol=0)
    else:
        np.testing.assert_allclose(np.asarray(got.contrast), want, rtol=0,
                                   atol=1e-12 * np.abs(want).max())


def grid_curve(t_x, x, t_y, y, method):
    """contrast_grid at +-0.6 s every 10 ms on 400-tick padded series (one shape per engine)."""
    return leadlag.contrast_grid(padded(t_x, 400), padded(x, 400), padded(t_y, 400),
                                 padded(y, 400), max_lag=0.6, resolution=0.01,
                                 mask_x=np.arange(400) < t_x.size,
                                 mask_y=np.arange(400) < t_y.size, n_cells=4096,
                                 options=LeadLagOptions(method=method))


@pytest.mark.parametrize("method", ["exact", "grid"])
def test_grid_floors_times_like_the_lead_lag_package(method):
    # Off-grid times are floored to the resolution; ticks sharing a cell keep the last value
    # (n = 300 ticks in 20 s at 10 ms: several shared cells). 1e-12 of the largest value.
    t_x, x, t_y, y = random_pair(3, n=300, m=350, span=20.0)
    got = grid_curve(t_x, x, t_y, y, method)
    cx, cy = np.floor(t_x / 0.01), np.floor(t_y / 0.01)
    keep_x = np.append(np.diff(cx) > 0, True)
    keep_y = np.append(np.diff(cy) > 0, True)
    assert not keep_x.all() and not keep_y.all()
    want = brute_force(cx[keep_x], x[keep_x], cy[keep_y], y[keep_y], np.arange(-60, 61))
    np.testing.assert_allclose(np.asarray(got.contrast), want, rtol=0,
                               atol=1e-12 * np.abs(want).max())


def test_hayashi_yoshida_closed_forms():
    # Synchronous ticks: HY is the realised covariance sum dx dy exactly (no other pair
    # overlaps); shifting y by one whole tick spacing pairs dx_i with dy_{i+1}. Correlation:
    # divided by sqrt(sum dx^2 sum dy^2). Exact sums of a few terms: 1e-13 relative.
    rng = np.random.default_rng(4)
    t = np.arange(50.0)
    x, y = np.cumsum(rng.normal(size=50)), np.cumsum(rng.normal(size=50))
    dx, dy = np.diff(x), np.diff(y)
    hy = leadlag.hayashi_yoshida(t, x, t, y)
    np.testing.assert_allclose(float(hy.covariance), np.sum(dx * dy), rtol=1e-13)
    np.testing.assert_allclose(float(hy.correlation),
                               np.sum(dx * dy) / np.sqrt(np.sum(dx**2) * np.sum(dy**2)),
                               rtol=1e-13)
    shifted = leadlag.hayashi_yoshida(t, x, t, y, lag=1.0)
    np.testing.assert_allclose(float(shifted.covariance), np.sum(dx[:-1] * dy[1:]), rtol=1e-13)
    # Nested sampling: y every tick, x every 3rd: each x interval overlaps exactly the three y
    # intervals inside it, so HY = sum over x intervals of dx * (sum of the three dy).
    hy = leadlag.hayashi_yoshida(padded(t[::3], 50), padded(x[::3], 50), t, y,
                                 mask_x=np.arange(50) < 17)  # padded: the same compile
    want = np.sum(np.diff(x[::3]) * dy[:48].reshape(16, 3).sum(axis=1))
    np.testing.assert_allclose(float(hy.covariance), want, rtol=1e-13)


def test_sign_convention_positive_lag_means_x_leads():
    # y copies x's moves 0.5 s later (y(t) = x(t - 0.5)), negated: the contrast peaks at
    # +0.5 s with a negative sign (an implied vol that falls as spot rises gives U < 0).
    rng = np.random.default_rng(5)
    t = np.arange(0.0, 60.0, 0.1)
    x = np.cumsum(rng.normal(size=t.size))
    lags = np.arange(-20, 21) * 0.1
    got, corr, _ = curve(t, x, t + 0.5, -x, lags)
    best = int(np.argmax(np.abs(got)))
    assert abs(lags[best] - 0.5) < 1e-9
    assert got[best] < 0
    np.testing.assert_allclose(corr[best], -1.0, rtol=1e-12)


def test_against_the_lead_lag_package_stored_output():
    # lead-lag 2.3's contrast is |U| / ((||dx|| + 1e-8)(||dy|| + 1e-8)) on integer (ms) times
    # (scripts/leadlag_reference.py). Same argmax lag (the truth, 120 ms). At lags < 3 ms we
    # agree with it to 2e-12 relative (its long-double sum in another order; the smallest
    # values carry the largest relative rounding). At lags >= 3 ms it is wrong: it clips
    # t_y - k at min(t_y) before its bisection, so the x interval that starts before y's first
    # tick (t_x[0] = 4 ms < t_y[0] = 6 ms) finds no partner and is dropped. Brute force
    # (above) agrees with us, and the package's numbers are exactly ours without that first
    # x interval (checked to 2e-12 relative).
    ref = np.load(DATA / "leadlag_package_reference.npz")
    t_x, t_y = ref["t_x_ms"] * 1e-3, ref["t_y_ms"] * 1e-3
    x, y, lags_ms = ref["x"], ref["y"], ref["lags_ms"]
    got, _, _ = curve(t_x, x, t_y, y, lags_ms * 1e-3)
    norm = ((np.sqrt(np.sum(np.diff(x) ** 2)) + 1e-8) * (np.sqrt(np.sum(np.diff(y) ** 2)) + 1e-8))
    ours = np.abs(got) / norm
    assert lags_ms[np.argmax(ours)] == ref["lag_ms"] == ref["true_lag_ms"] == 120
    right = lags_ms < 3
    np.testing.assert_allclose(ours[right], ref["contrast"][right], rtol=2e-12)
    assert np.all(np.abs(ours[~right] - ref["contrast"][~right]) > 1e-9 * ours[~right])
    some = np.array([3, 150, 300])
    want = brute_force(ref["t_x_ms"].astype(float), x, ref["t_y_ms"].astype(float), y, some)
    np.testing.assert_allclose(got[some + 300], want, rtol=1e-12)
    without_first, _, _ = curve(t_x[1:], x[1:], t_y, y, lags_ms[~right] * 1e-3)
    np.testing.assert_allclose(np.abs(without_first) / norm, ref["contrast"][~right],
                               rtol=2e-12)


def test_options_merge_ties_subsample_preaverage():
    # The options together equal the brute-force sum on the series they are documented to
    # produce: ties merged to the last tick, then the flat mean of 4 levels (first 3 ticks
    # dropped), then every 3rd tick. 1e-12 relative (exact sums, a few rounded means).
    t_x, x, t_y, y = random_pair(6, n=80, m=90, span=20.0)
    lags = np.linspace(-1, 1, 9)
    dup_t = np.insert(t_x, 10, t_x[10])            # a duplicated time with another value
    dup_x = np.insert(x, 10, x[10] - 3.0)          # ... the later tick (x[10]) must win
    assert curve(dup_t, dup_x, t_y, y, lags)[2] == LeadLagStatus.DUPLICATE_TIMES
    options = LeadLagOptions(merge_ties=True, preaverage=4, subsample=3)
    got = leadlag.contrast(dup_t, dup_x, t_y, y, lags, options=options)
    mean = lambda v: np.convolve(v, np.ones(4) / 4, mode="valid")
    want = brute_force(t_x[3:][::3], mean(x)[::3], t_y[3:][::3], mean(y)[::3], lags)
    np.testing.assert_allclose(np.asarray(got.contrast), want, rtol=1e-12)


def test_batched_padded_lanes_equal_single_calls_and_dtype():
    # Two days of different lengths padded into one call: each lane equals its own brute
    # force (1e-12 relative); float32 inputs give float32 (1e-3: float32 rounding of the sums).
    a = random_pair(7, n=60, m=70)
    b = random_pair(8, n=40, m=50)
    lags = np.linspace(-3, 3, 13)
    got, _, status = curve(*a, lags, second=b)
    np.testing.assert_array_equal(status, 0)
    for lane, pair in enumerate((a, b)):
        np.testing.assert_allclose(got[lane], brute_force(*pair, lags), rtol=1e-12)
    f32 = [v.astype(np.float32) for v in a]
    low = leadlag.contrast(*f32, lags.astype(np.float32))
    assert low.contrast.dtype == jnp.float32 and low.correlation.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(low.contrast), brute_force(*a, lags), rtol=1e-3)
