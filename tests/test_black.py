"""Black-76 / BSM / Bachelier prices, the normalised Black kernel and closed-form greeks.

References: mpmath at 50 digits (independent evaluation of the same closed forms), QuantLib's
blackFormula, and JAX autodiff of the price for every greek.
"""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import QuantLib as ql

import jaxvol
from jaxvol.black import normalised_black
from jaxvol.special import erfcx, mills_complement, norm_cdf

mp.mp.dps = 50


def _mp_normalised_black(x, s, is_call):
    x, s = mp.mpf(float(x)), mp.mpf(float(s))
    th = 1 if is_call else -1
    return th * (mp.exp(x / 2) * mp.ncdf(th * (x / s + s / 2))
                 - mp.exp(-x / 2) * mp.ncdf(th * (x / s - s / 2)))


def test_erfcx_matches_mpmath():
    xs = np.concatenate([np.linspace(-26.0, 30.0, 801), np.geomspace(1e-8, 1e5, 200)])
    ref = np.array([float(mp.exp(mp.mpf(x) ** 2) * mp.erfc(mp.mpf(x))) for x in xs])
    # Cody's approximations are accurate to ~1e-16; 2e-15 leaves room for the exp split only.
    np.testing.assert_allclose(np.asarray(erfcx(xs)), ref, rtol=2e-15, atol=0)


def test_norm_cdf_relative_accuracy_in_left_tail():
    zs = np.linspace(-37.0, 8.0, 901)  # Phi(-37) ~ 6e-300, still a normal double
    ref = np.array([float(mp.ncdf(mp.mpf(z))) for z in zs])
    np.testing.assert_allclose(np.asarray(norm_cdf(zs)), ref, rtol=2e-15, atol=0)
    # JAX's ndtr loses ~1e-13 there: this is why jaxvol has its own.
    assert np.max(np.abs(np.asarray(jax.scipy.special.ndtr(zs)) / ref - 1)) > 1e-14


def test_mills_complement_has_no_cancellation():
    hs = -np.geomspace(1e-3, 60.0, 400)
    ref = np.array([float(1 + mp.mpf(h) * mp.ncdf(mp.mpf(h)) / mp.npdf(mp.mpf(h))) for h in hs])
    np.testing.assert_allclose(np.asarray(mills_complement(hs)), ref, rtol=5e-15, atol=0)


def test_normalised_black_otm_relative_accuracy_far_into_the_wings():
    """|ln(F/K)| up to 50 total standard deviations, prices down to 1e-300, at 1e-14 relative."""
    rng = np.random.default_rng(7)
    n = 1500
    s = np.exp(rng.uniform(np.log(1e-4), np.log(8.0), n))
    h = -rng.uniform(0.0, 50.0, n)
    is_call = rng.random(n) < 0.5
    x = np.where(is_call, h * s, -h * s)  # out of the money for its own type
    ref = np.array([float(_mp_normalised_black(a, b, c)) for a, b, c in zip(x, s, is_call)])
    got = np.asarray(normalised_black(x, s, is_call))
    keep = ref > 1e-300
    assert keep.sum() > 1000
    rel = np.abs(got[keep] / ref[keep] - 1)
    assert rel.max() < 1e-14, rel.max()


@pytest.mark.parametrize("deep_share", [0.005, 0.5])
def test_rare_wing_lanes_gathered_or_not_give_the_same_prices(deep_share):
    """The deep-wing series runs on gathered lanes when they are few (<= 1/64 of a batch of
    8192) and on every lane otherwise; both paths against mpmath at 1e-14 relative (the
    kernel's accuracy) and against small batches (always evaluated on every lane) at 4 ulp."""
    rng = np.random.default_rng(11)
    n = 8192
    deep = rng.random(n) < deep_share
    s = np.where(deep, rng.uniform(0.05, 1.0, n), rng.uniform(0.05, 1.5, n))
    h = np.where(deep, -rng.uniform(11.0, 40.0, n), -rng.uniform(0.0, 5.0, n))
    x = h * s
    got = np.asarray(normalised_black(x, s, True))
    chunks = np.concatenate([np.asarray(normalised_black(x[i:i + 512], s[i:i + 512], True))
                             for i in range(0, n, 512)])
    np.testing.assert_allclose(got, chunks, rtol=4 * 2.2e-16, atol=0)
    sample = np.concatenate([np.flatnonzero(deep)[:20], np.flatnonzero(~deep)[:5]])
    ref = np.array([float(_mp_normalised_black(x[i], s[i], True)) for i in sample])
    keep = ref > 1e-300
    np.testing.assert_allclose(got[sample][keep], ref[keep], rtol=1e-14, atol=0)


def test_split_exponentials_survive_jit():
    """Under jit XLA rewrites exp(a)*exp(b) to exp(a+b) and contracts a*b+c to an FMA, which
    undid the split exponentials and the double-double Gaussian factor (5.7e-14 on a 1e-262
    price before the fix): the jitted normal CDF and a far-wing price keep 2e-15 / 1e-14."""
    zs = np.linspace(-37.0, -20.0, 64)
    ref = np.array([float(mp.ncdf(mp.mpf(z))) for z in zs])
    np.testing.assert_allclose(np.asarray(jax.jit(norm_cdf)(zs)), ref, rtol=2e-15, atol=0)
    x, s = np.array([-34.70852765460819 * 0.007420256170316353]), np.array([0.007420256170316353])
    want = float(_mp_normalised_black(x[0], s[0], True))
    got = float(jax.jit(lambda a, b: normalised_black(a, b, True))(x, s)[0])
    assert abs(got / want - 1) < 1e-14


def test_black_price_matches_quantlib_and_parity():
    rng = np.random.default_rng(1)
    n = 200
    forward = rng.uniform(50, 150, n)
    strike = rng.uniform(50, 150, n)
    expiry = rng.uniform(0.01, 5, n)
    vol = rng.uniform(0.05, 1.0, n)
    discount = rng.uniform(0.8, 1.0, n)
    is_call = rng.random(n) < 0.5
    got = np.asarray(jaxvol.black_price(forward, strike, expiry, vol, is_call, discount=discount))
    ref = np.array([
        ql.blackFormula(ql.Option.Call if c else ql.Option.Put, k, f, v * np.sqrt(t), d)
        for f, k, t, v, d, c in zip(forward, strike, expiry, vol, discount, is_call)])
    # QuantLib subtracts two CDF terms (no OTM special-casing): agreement to 1e-12 of the price
    # scale D*F is what its own rounding allows.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * 150)
    call = np.asarray(jaxvol.black_price(forward, strike, expiry, vol, True, discount=discount))
    put = np.asarray(jaxvol.black_price(forward, strike, expiry, vol, False, discount=discount))
    np.testing.assert_allclose(call - put, discount * (forward - strike), rtol=0, atol=1e-12 * 150)


def test_bsm_price_is_black_on_the_forward():
    spot, strike, expiry, vol, rate, div = 100.0, 110.0, 0.7, 0.25, 0.03, 0.01
    got = float(jaxvol.bsm_price(spot, strike, expiry, vol, rate, div, True))
    process = (ql.Option.Call, strike, spot * np.exp((rate - div) * expiry), vol * np.sqrt(expiry),
               np.exp(-rate * expiry))
    assert got == pytest.approx(ql.blackFormula(*process), rel=1e-13)


def _autodiff_greeks(price_fn, args, spot_name):
    idx = {name: i for i, name in enumerate(["under", "strike", "expiry", "vol", "rate"])}

    # every derivative in one jitted program (one compile instead of one per transformation of
    # the public function; the values are the same autodiff derivatives)
    @jax.jit
    def derivatives(*a):
        first = jax.grad(price_fn, argnums=(0, 1, 2, 3, 4))(*a)
        second = lambda i, j: jax.grad(lambda *b: jax.grad(price_fn, i)(*b), j)(*a)  # noqa: E731
        return {"delta": first[idx["under"]], "dual_delta": first[idx["strike"]],
                "theta": -first[idx["expiry"]], "vega": first[idx["vol"]],
                "rho": first[idx["rate"]], "gamma": second(0, 0), "dual_gamma": second(1, 1),
                "vanna": second(0, 3), "volga": second(3, 3)}

    return derivatives(*args)


@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("strike", [70.0, 100.0, 135.0])
def test_black76_greeks_equal_autodiff(is_call, strike):
    forward, expiry, vol, rate = 100.0, 0.8, 0.3, 0.04

    def price(f, k, t, v, r):
        return jaxvol.black_price(f, k, t, v, is_call, discount=jnp.exp(-r * t))

    auto = _autodiff_greeks(price, (forward, strike, expiry, vol, rate), "forward")
    closed = jaxvol.greeks(forward, strike, expiry, vol, is_call, discount=np.exp(-rate * expiry))
    for name, value in auto.items():
        # both are double-precision evaluations of the same derivative: 1e-10 relative
        assert float(getattr(closed, name)) == pytest.approx(float(value), rel=1e-10, abs=1e-13), name


@pytest.mark.parametrize("is_call", [True, False])
def test_bsm_greeks_equal_autodiff(is_call):
    spot, strike, expiry, vol, rate, div = 95.0, 100.0, 1.3, 0.22, 0.05, 0.02

    def price(s, k, t, v, r):
        return jaxvol.bsm_price(s, k, t, v, r, div, is_call)

    auto = _autodiff_greeks(price, (spot, strike, expiry, vol, rate), "spot")
    closed = jaxvol.bsm_greeks(spot, strike, expiry, vol, rate, div, is_call)
    for name, value in auto.items():
        assert float(getattr(closed, name)) == pytest.approx(float(value), rel=1e-10, abs=1e-13), name


def test_bachelier_matches_mpmath_including_deep_wings():
    forward, expiry, vol = 0.02, 2.0, 0.01
    strikes = np.array([-0.05, 0.0, 0.02, 0.05, 0.08, 0.15])
    for k in strikes:
        for is_call in (True, False):
            got = float(jaxvol.bachelier_price(forward, k, expiry, vol, is_call, discount=0.97))
            s = mp.mpf(vol) * mp.sqrt(expiry)
            th = 1 if is_call else -1
            d = (mp.mpf(forward) - mp.mpf(float(k))) / s
            ref = mp.mpf("0.97") * (th * (mp.mpf(forward) - mp.mpf(float(k))) * mp.ncdf(th * d)
                                    + s * mp.npdf(d))
            assert got == pytest.approx(float(ref), rel=1e-14, abs=0), (k, is_call)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_prices_keep_input_dtype(dtype):
    args = [jnp.asarray(v, dtype) for v in (100.0, 105.0, 0.5, 0.2)]
    assert jaxvol.black_price(*args, True).dtype == dtype
    assert jaxvol.bachelier_price(*args, False).dtype == dtype
    assert jaxvol.greeks(*args, True).vanna.dtype == dtype
    assert normalised_black(args[0] * 0 - 0.1, args[3], True).dtype == dtype
    assert erfcx(args[3]).dtype == dtype


def test_float32_black_price_accuracy():
    """float32 prices: relative error against float64 below 1e-5 for prices above 1e-6*F."""
    rng = np.random.default_rng(3)
    n = 2000
    f = np.full(n, 100.0)
    k = 100.0 * np.exp(rng.normal(0, 0.3, n))
    t = rng.uniform(0.05, 3.0, n)
    v = rng.uniform(0.05, 1.0, n)
    c = rng.random(n) < 0.5
    p64 = np.asarray(jaxvol.black_price(f, k, t, v, c))
    p32 = np.asarray(jaxvol.black_price(*(a.astype(np.float32) for a in (f, k, t, v)), c))
    keep = p64 > 1e-4
    # inputs are rounded to float32 (2^-24 relative); the price amplifies that by its
    # elasticities (|d ln P / d ln K| up to ~50 here) -> 1e-5 bound.
    assert np.max(np.abs(p32[keep] / p64[keep] - 1)) < 1e-5
