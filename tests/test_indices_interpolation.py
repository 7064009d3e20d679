"""VXJ interpolation of total variance in z: the C1 monotone cubic and its exact Gaussian
integral (closed form checked against mpmath; shape preservation; flat extrapolation; the
no-arbitrage check of the implied map k(z))."""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

from jaxvol.indices import vxj

N = 17   # every node array is padded to this width (keep=False): one compilation per function


def _pad(z, w):
    z, w = np.asarray(z, float), np.asarray(w, float)
    keep = np.arange(N) < len(z)
    return (jnp.asarray(np.pad(z, (0, N - len(z)), constant_values=z[-1] + 1.0)),
            jnp.asarray(np.pad(w, (0, N - len(w)), constant_values=0.0)), jnp.asarray(keep))


@functools.partial(jax.jit, static_argnames="interpolation")
def _evaluate(query, z, w, keep, interpolation="cubic"):
    return jax.vmap(lambda q: vxj.interpolated_total_variance(
        q, z, w, keep, interpolation=interpolation))(query)


_integral = jax.jit(lambda z, w, keep: vxj.gaussian_integral(z, w, keep))
_pieces = jax.jit(lambda z, w, keep: vxj.hermite_pieces(z, w, keep))


def _phi(x):
    return mpmath.exp(-x * x / 2) / mpmath.sqrt(2 * mpmath.pi)


def _mp_integral_of_pieces(pieces, first_w, last_w):
    """int w phi over the real line, by mpmath quadrature of each piece and of the flat tails."""
    total = mpmath.mpf(0)
    z_nodes = []
    for z0, z1, c0, c1, c2, c3, active in zip(*(np.asarray(a).tolist() for a in (
            pieces.z0, pieces.z1, pieces.c0, pieces.c1, pieces.c2, pieces.c3, pieces.active))):
        if not active:
            continue
        z_nodes += [z0, z1]
        total += mpmath.quad(lambda x: (c0 + c1 * (x - z0) + c2 * (x - z0) ** 2
                                        + c3 * (x - z0) ** 3) * _phi(x), [z0, z1])
    total += first_w * mpmath.quad(_phi, [-mpmath.inf, min(z_nodes)])
    total += last_w * mpmath.quad(_phi, [max(z_nodes), mpmath.inf])
    return float(total)


def test_closed_form_integral_of_a_cubic_piece_against_mpmath():
    # pieces near the centre, in both tails, wide and narrow
    cases = np.array([[-1.3, 0.4, 0.03, -0.01, 0.02, -0.005],
                      [0.2, 0.25, 0.02, 0.3, -4.0, 25.0],
                      [2.5, 6.0, 0.05, 0.02, 0.004, -0.0007],
                      [-7.5, -6.8, 0.2, -0.3, 0.1, 0.05],
                      [-0.6, 1.9, 0.0, 0.0, 0.0, 1.0],
                      [1.0, 3.0, 1.0, 0.0, 0.0, 0.0]])
    closed = jax.jit(functools.partial(vxj.gaussian_integral_cubic, method="closed"))
    got = np.asarray(closed(*jnp.asarray(cases.T)))
    mpmath.mp.dps = 30
    for (z0, z1, c0, c1, c2, c3), value in zip(cases.tolist(), got):
        expected = mpmath.quad(lambda x: (c0 + c1 * (x - z0) + c2 * (x - z0) ** 2
                                          + c3 * (x - z0) ** 3) * _phi(x), [z0, z1])
        # Closed form in float64: the constant A and the quadratic q grow like c3 (2 + |z0|)^3,
        # so its rounding is ~eps times that scale times the normal mass of the piece, which
        # for a strongly curved narrow piece (case 2) exceeds eps times the result itself
        # (measured 2e-12 relative there, 1e-15 absolute). Bound: 1e-13 relative or 1e-14
        # times that scale, whichever is larger; the tail piece (value ~1e-11) is covered.
        mass = float(mpmath.ncdf(z1) - mpmath.ncdf(z0))
        scale = mass * sum(abs(c) * (2 + abs(z0)) ** j for j, c in enumerate((c0, c1, c2, c3)))
        np.testing.assert_allclose(value, float(expected), rtol=1e-13, atol=1e-14 * scale)


def test_narrow_pieces_use_gauss_legendre():
    # Interpolating cubics on narrow pieces (nodes close in z: noisy wings) have c2 ~ 1/h and
    # c3 ~ 1/h^2; the closed form then cancels catastrophically, the default does not.
    rows = []
    for z0 in (-8.0, -2.2, 0.0, 2.5):
        for h in (1e-4, 0.01, 0.3, 0.6, 2.0):
            w0, w1, d0, d1 = 0.02, 0.021, 0.05, -0.03      # a Hermite piece: bounded values
            s = (w1 - w0) / h
            rows.append([z0, z0 + h, w0, d0, (3 * s - 2 * d0 - d1) / h, (d0 + d1 - 2 * s) / h**2])
    cases = np.array(rows)
    auto = np.asarray(jax.jit(vxj.gaussian_integral_cubic)(*jnp.asarray(cases.T)))
    closed = np.asarray(jax.jit(functools.partial(vxj.gaussian_integral_cubic, method="closed"))(
        *jnp.asarray(cases.T)))
    mpmath.mp.dps = 30
    expected = np.array([float(mpmath.quad(
        lambda x: (c0 + c1 * (x - z0) + c2 * (x - z0) ** 2 + c3 * (x - z0) ** 3) * _phi(x),
        [z0, z1])) for z0, z1, c0, c1, c2, c3 in rows])
    # Gauss–Legendre below width 0.5 and the closed form above: measured <= 5e-14 relative
    # (the polynomial's own rounding at h = 1e-4 is ~1e-12 of c3 h^3 but c0 dominates).
    np.testing.assert_allclose(auto, expected, rtol=1e-12)
    assert np.max(np.abs(closed / expected - 1)) > 1e-3   # why: the closed form fails at 1e-4


def test_interpolant_is_exact_on_a_quadratic():
    # Non-uniform nodes, w monotone (no extremum among the nodes, limiter inactive): the
    # three-point node derivatives are exact for a quadratic, so each cubic piece IS the
    # quadratic. Checked pointwise (1e-16 absolute on w ~ 0.03: rounding) and through the
    # integral, against mpmath of the quadratic between the end nodes + flat tails.
    z = np.array([-2.3, -1.6, -1.1, -0.3, 0.2, 0.9, 1.7, 2.6])
    quadratic = lambda x: 0.02 - 0.006 * x + 0.0008 * x * x  # noqa: E731
    args = _pad(z, quadratic(z))
    query = np.linspace(-2.3, 2.6, 301)
    np.testing.assert_allclose(np.asarray(_evaluate(jnp.asarray(query), *args)),
                               quadratic(query), rtol=0, atol=1e-16)
    assert bool(np.all(np.asarray(_pieces(*args).cubic)[:len(z) - 1]))
    integral, count, checked = _integral(*args)
    mpmath.mp.dps = 30
    expected = (mpmath.quad(lambda x: quadratic(x) * _phi(x), [z[0], z[-1]])
                + quadratic(z[0]) * mpmath.ncdf(z[0]) + quadratic(z[-1]) * mpmath.ncdf(-z[-1]))
    assert int(count) == len(z) and bool(checked)
    np.testing.assert_allclose(float(integral), float(expected), rtol=1e-14)


def test_cubic_data_converge_at_third_order():
    # A monotone cubic is not reproduced (the three-point derivative errs by h^2 w'''/6), but
    # on uniform nodes with w''' constant the interpolation error is exactly proportional to
    # h^3: halving h divides the largest error by 8. Linear interpolation: h^2 w''/8 plus an
    # h^3 term, so by a little under 4 (measured 3.82).
    cubic = lambda x: 0.03 - 0.004 * x + 0.0005 * x**2 - 0.0002 * x**3  # noqa: E731
    query = jnp.linspace(-2.0, 2.0, 2001)
    errors = {}
    for interpolation in ("cubic", "linear"):
        for nodes in (9, 17):
            z = np.linspace(-2.0, 2.0, nodes)
            values = _evaluate(query, *_pad(z, cubic(z)), interpolation=interpolation)
            errors[interpolation, nodes] = np.max(np.abs(np.asarray(values) - cubic(query)))
    assert 7.9 < errors["cubic", 9] / errors["cubic", 17] < 8.1
    assert 3.6 < errors["linear", 9] / errors["linear", 17] < 4.0
    assert errors["cubic", 17] < errors["linear", 17] / 20


def _plain_parabolic_cubic(z, w, query):
    """The unlimited C1 cubic (three-point slopes everywhere), as the counter-example."""
    s = np.diff(w) / np.diff(z)
    h = np.diff(z)
    d = np.empty_like(w)
    d[1:-1] = (h[1:] * s[:-1] + h[:-1] * s[1:]) / (h[:-1] + h[1:])
    d[0], d[-1] = s[0], s[-1]
    i = np.clip(np.searchsorted(z, query, side="right") - 1, 0, len(z) - 2)
    t = (query - z[i]) / h[i]
    return ((2 * t**3 - 3 * t**2 + 1) * w[i] + (t**3 - 2 * t**2 + t) * h[i] * d[i]
            + (-2 * t**3 + 3 * t**2) * w[i + 1] + (t**3 - t**2) * h[i] * d[i + 1])


def test_shape_preserving_no_overshoot():
    query = np.linspace(-2.0, 2.0, 4001)
    z = np.linspace(-2.0, 2.0, 9)
    step = np.array([0.05, 0.05, 0.049, 0.03, 0.0101, 0.01, 0.01, 0.01, 0.01])   # monotone
    dip = np.array([0.06, 0.05, 0.03, 0.02, 0.0201, 0.04, 0.05, 0.055, 0.06])   # one minimum
    for w in (step, dip):
        # the unlimited cubic rings on these data (so the assertions below can fail) ...
        plain = _plain_parabolic_cubic(z, w, query)
        assert plain.min() < w.min() - 1e-4 or plain.max() > w.max() + 1e-4
        # ... the limited one stays within the data and monotone between monotone data
        values = np.asarray(_evaluate(jnp.asarray(query), *_pad(z, w)))
        assert values.min() >= w.min() and values.max() <= w.max()
        for a, b in zip(z[:-1], z[1:]):
            piece = np.diff(values[(query >= a) & (query <= b)])
            lo, hi = sorted(w[np.searchsorted(z, [a, b])])
            if hi > lo:
                assert np.all(piece * np.sign(w[np.searchsorted(z, b)] - w[np.searchsorted(z, a)])
                              >= -1e-17)
    step_values = np.asarray(_evaluate(jnp.asarray(query), *_pad(z, step)))
    assert np.all(np.diff(step_values) <= 1e-17)


def test_flat_extrapolation_c1_and_integral_of_a_smile():
    # A skewed smile (minimum between nodes) on non-uniform nodes: the interpolant matches the
    # nodes, is C1 at interior nodes, flat beyond the ends, and the closed-form integral
    # equals mpmath quadrature of the same pieces and tails.
    z = np.array([-3.1, -2.2, -1.5, -0.9, -0.4, 0.0, 0.35, 0.8, 1.4, 2.1, 2.9])
    w = 0.004 + 0.0012 * (z - 0.5) ** 2 - 0.0004 * (z - 0.5) ** 3 / (1 + 0.1 * z * z)
    args = _pad(z, w)
    at_nodes = np.asarray(_evaluate(jnp.asarray(z), *args))
    np.testing.assert_allclose(at_nodes, w, rtol=0, atol=1e-18)
    outside = np.asarray(_evaluate(jnp.array([-40.0, -3.2, 3.0, 40.0]), *args))
    np.testing.assert_array_equal(outside, [w[0], w[0], w[-1], w[-1]])
    eps = 1e-7
    left = np.asarray(_evaluate(jnp.asarray(z[1:-1] - eps), *args))
    right = np.asarray(_evaluate(jnp.asarray(z[1:-1] + eps), *args))
    slope_left = (at_nodes[1:-1] - left) / eps
    slope_right = (right - at_nodes[1:-1]) / eps
    # one-sided differences of a C1 cubic: O(eps w'') ~ 1e-9 apart, rounding 1e-18/eps ~ 1e-11
    np.testing.assert_allclose(slope_left, slope_right, rtol=0, atol=1e-8)
    pieces = _pieces(*args)
    assert bool(np.all(np.asarray(pieces.cubic)[:len(z) - 1]))
    integral, count, checked = _integral(*args)
    mpmath.mp.dps = 30
    # both sides integrate the same piecewise cubic: agreement to rounding (1e-14 relative)
    np.testing.assert_allclose(float(integral), _mp_integral_of_pieces(pieces, w[0], w[-1]),
                               rtol=1e-14)


def _log_moneyness(z, w):
    return z * np.sqrt(w) - w / 2


def test_implied_map_check_falls_back_to_linear():
    # Steep fall of w on the call side (z > 0): the node map k(z) = z sqrt(w) - w/2 increases,
    # but the cubic's k(z) decreases inside the fourth piece (a negative density): that piece
    # falls back to the linear one, whose map increases.
    z = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    w = np.array([0.0436, 0.0409, 0.0334, 0.0323, 0.0227])
    assert np.all(np.diff(_log_moneyness(z, w)) > 0)
    query = np.linspace(0.0, 2.0, 4001)
    args = _pad(z, w)
    # the unchecked Hermite cubic with the module's own node derivatives
    d = np.asarray(vxj._node_derivatives(*args)[0])[:len(z)]
    i = np.clip(np.searchsorted(z, query, side="right") - 1, 0, len(z) - 2)
    h, t = z[i + 1] - z[i], (query - z[i]) / (z[i + 1] - z[i])
    raw = ((2 * t**3 - 3 * t**2 + 1) * w[i] + (t**3 - 2 * t**2 + t) * h * d[i]
           + (-2 * t**3 + 3 * t**2) * w[i + 1] + (t**3 - t**2) * h * d[i + 1])
    assert np.diff(_log_moneyness(query, raw)).min() < 0
    pieces = _pieces(*args)
    np.testing.assert_array_equal(np.asarray(pieces.cubic)[:4], [True, True, True, False])
    assert bool(np.all(np.asarray(pieces.checked)[:4]))
    values = np.asarray(_evaluate(jnp.asarray(query), *args))
    assert np.all(np.diff(_log_moneyness(query, values)) > 0)
    assert bool(_integral(*args)[2])
    # Steeper still: even the linear piece's map turns down; reported, not hidden.
    w = np.array([0.0491, 0.0482, 0.038, 0.0253, 0.0155])
    assert np.all(np.diff(_log_moneyness(z, w)) > 0)
    integral, count, checked = _integral(*_pad(z, w))
    assert not bool(checked) and np.isfinite(float(integral))
