"""Forwards and discount factors from put-call parity (jaxvol.chains.forwards / analyze)."""

import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol.chains import ForwardStatus, compute
from jaxvol.chains.boards import black_board

# Blocks of 8 slices: every board of this file compiles the same few kernel shapes.
BLOCKS = dict(slice_block=8)


def _slices(result):
    slices = result.packed.slices[["underlying", "expiry"]].copy()
    for name in ("forward", "discount", "forward_se", "discount_se", "status"):
        slices[name] = getattr(result.slice_forwards, name)
    return slices


def _against_truth(result, truth):
    return _slices(result).merge(truth, on=["underlying", "expiry"], suffixes=("", "_true"))


def test_exact_board_recovers_forward_and_discount_to_1e10():
    # Exact Black quotes: C - P is exactly linear in K, so only float64 round-off remains
    # (prices up to ~1e3, ~1e-13 relative in the 2x2 normal equations); 1e-10 is the bar.
    board, truth = black_board(6, 3, 25, seed=1)
    slices = _against_truth(compute(board, **BLOCKS), truth)
    assert (slices["status"] == ForwardStatus.OK).all()
    np.testing.assert_allclose(slices["forward"], slices["forward_true"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(slices["discount"], slices["discount_true"], rtol=1e-10, atol=0)


def test_noisy_board_parity_line_within_the_spread():
    # Mids moved by up to one half-spread (uniform): the true price stays inside every quote.
    # The fitted parity line D(F - K) must lie inside the C - P quote half-width at every strike
    # (measured worst 0.68 of it), and the forward error must stay within the ATM half-width
    # (measured worst 0.45 of it).
    board, truth = black_board(40, 4, 31, seed=3, noise=1.0)
    result = compute(board, **BLOCKS)
    rows = jaxvol.chains.rows_frame(result)
    wide = rows.pivot_table(index=["underlying", "expiry", "strike"], columns="option_type",
                            values=["bid", "ask", "forward", "discount"]).reset_index()
    wide.columns = ["_".join(c).strip("_") for c in wide.columns]
    wide = wide.merge(truth, on=["underlying", "expiry"])
    half = 0.5 * (wide["ask_C"] - wide["bid_C"] + wide["ask_P"] - wide["bid_P"])
    fitted = wide["discount_C"] * (wide["forward_C"] - wide["strike"])
    true = wide["discount"] * (wide["forward"] - wide["strike"])
    assert (np.abs(fitted - true) / half).max() < 1.0
    wide["distance"] = np.abs(wide["strike"] - wide["forward"])
    atm = wide.loc[wide.groupby(["underlying", "expiry"])["distance"].idxmin()]
    atm_half = 0.5 * (atm["ask_C"] - atm["bid_C"] + atm["ask_P"] - atm["bid_P"])
    error = np.abs(atm["forward_C"] - atm["forward"]) * atm["discount"]
    assert (error / atm_half).max() < 1.0


def test_standard_errors_are_consistent_with_the_errors():
    # Uniform noise, 160 slices: |error| / se is a roughly normal score; measured max 3.3,
    # median 0.6.  Bounds 5 and 1.5 fail if the se were off by a factor ~2 either way.
    board, truth = black_board(40, 4, 31, seed=3, noise=1.0)
    slices = _against_truth(compute(board, **BLOCKS), truth)
    score_f = np.abs(slices["forward"] - slices["forward_true"]) / slices["forward_se"]
    score_d = np.abs(slices["discount"] - slices["discount_true"]) / slices["discount_se"]
    for score in (score_f, score_d):
        assert np.isfinite(score).all()
        assert score.max() < 5.0 and 0.2 < score.median() < 1.5


def test_outlier_pair_is_damped_by_huber_weights():
    # One near-the-money call quoted 40 half-spreads too high (still a valid quote).  Plain
    # weighted least squares (huber = reject = 1e12: never damps) moves F by a sizeable fraction
    # of the outlier; the
    # Huber IRLS must cut that error at least tenfold.
    board, truth = black_board(1, 1, 25, seed=2)
    f_true = truth["forward"].iloc[0]
    atm = board.loc[board["option_type"] == "C"].assign(d=lambda b: np.abs(b.strike - f_true))
    row = atm["d"].idxmin()
    shift = 20.0 * (board.at[row, "ask"] - board.at[row, "bid"])
    board.loc[row, ["bid", "ask"]] += shift
    plain = compute(board, huber=1e12, reject=1e12).slice_forwards.forward[0]  # plain WLS
    robust = compute(board).slice_forwards.forward[0]
    assert abs(robust - f_true) < 0.1 * abs(plain - f_true)


def test_supplied_values_replace_fitted_ones():
    board, truth = black_board(2, 2, 15, seed=4)
    merged = board.merge(truth, on=["underlying", "expiry"])
    given_d = compute(merged.drop(columns=["forward", "atm_vol"]))
    given_f = compute(merged.drop(columns=["discount", "atm_vol"]))
    given_both = compute(merged.drop(columns=["atm_vol"]))
    for result in (given_d, given_f, given_both):
        slices = _against_truth(result, truth)
        # exact quotes: 1e-10 as in the exact-board test
        np.testing.assert_allclose(slices["forward"], slices["forward_true"], rtol=1e-10)
        np.testing.assert_allclose(slices["discount"], slices["discount_true"], rtol=1e-10)
    assert (given_both.slice_forwards.status == ForwardStatus.SUPPLIED).all()
    assert (given_d.slice_forwards.discount_se == 0).all()
    assert (given_f.slice_forwards.forward_se == 0).all()


def test_rate_and_dividend_columns_give_the_carry():
    board, truth = black_board(1, 2, 15, seed=5)
    merged = board.merge(truth, on=["underlying", "expiry"])
    rate = -np.log(merged["discount"]) / merged["expiry"]
    table = board.assign(rate=rate, spot=100.0,
                         dividend_yield=rate - np.log(merged["forward"] / 100.0) / merged["expiry"])
    slices = _against_truth(compute(table), truth)
    assert (slices["status"] == ForwardStatus.SUPPLIED).all()
    np.testing.assert_allclose(slices["forward"], slices["forward_true"], rtol=1e-12)


def test_slice_without_pairs_has_no_forward_and_is_flagged():
    board, _ = black_board(1, 2, 11, seed=6)
    late_puts = (board["expiry"] == board["expiry"].max()) & (board["option_type"] == "P")
    calls_only = board[~late_puts]
    out = jaxvol.chains.analyze(calls_only)
    late = out["expiry"] == out["expiry"].max()
    assert out.loc[late, "forward"].isna().all()
    no_forward = jaxvol.chains.flagged(out["quality_flags"], jaxvol.chains.Flag.NO_FORWARD)
    assert no_forward[late].all() and not no_forward[~late].any()
    assert out.loc[~late, "forward"].notna().all()


# Cboe VIX worked example (real SPX quotes), packaged by the indices engineer in jaxvol/data
# (source: Cboe, "VIX Mathematics Methodology"; see jaxvol/data/README.md).
_MINUTES_PER_YEAR = 525_600.0
_TERMS = {"near": (34_484.0, 0.031664e-2, 1962.89996), "next": (44_954.0, 0.028797e-2, 1962.40006)}


def cboe_board(with_rate=True):
    import importlib.resources
    path = importlib.resources.files("jaxvol") / "data" / "cboe_vix_example.csv"
    wide = pd.read_csv(path)
    expiry = wide["term"].map({t: v[0] / _MINUTES_PER_YEAR for t, v in _TERMS.items()})
    rate = wide["term"].map({t: v[1] for t, v in _TERMS.items()})
    parts = [pd.DataFrame({"underlying": "SPX", "expiry": expiry, "strike": wide["strike"],
                           "option_type": side[0].upper(), "bid": wide[f"{side}_bid"],
                           "ask": wide[f"{side}_ask"]}) for side in ("call", "put")]
    board = pd.concat(parts, ignore_index=True)
    if with_rate:
        board["rate"] = pd.concat([rate, rate], ignore_index=True)
    return board


@pytest.mark.parametrize("with_rate", [True, False])
def test_cboe_spx_forwards_within_the_atm_quote_interval(with_rate):
    # The published forwards use one strike (K* = 1960) and the given rates; ours regress on the
    # 12 pairs nearest the money.  Both must agree within the half-width of the 1960 C - P quote
    # interval (1.55 near, 0.50 next); measured differences 0.12 / -0.11 (0.12 / -0.11 with D
    # fitted too).
    result = compute(cboe_board(with_rate), strike_buckets=(16, 32, 64, 256))  # one shape
    forward = result.slice_forwards.forward
    published = np.array([_TERMS["near"][2], _TERMS["next"][2]])
    half_width = np.array([0.5 * (1.7 + 1.4), 0.5 * (0.6 + 0.4)])
    assert (np.abs(forward - published) < half_width).all()
    assert (result.slice_forwards.status == ForwardStatus.OK).all()
