"""The embedded synthetic market: schema, determinism, strike grids, quotes, bad rows."""

import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol import synthetic

N, E, S = 6, 4, 180  # the shapes of tests/test_jobs_pipeline.py (shared compilations)


@pytest.fixture(scope="module")
def market():
    return synthetic.market(N, E, S, heston_share=0.5, include_defects=True)


def test_schema_and_size(market):
    assert len(market) == N * E * S * 2
    assert list(market.columns[:6]) == ["underlying", "expiry", "strike", "option_type", "bid",
                                        "ask"]
    assert set(market["option_type"]) == {"C", "P"}
    assert market.groupby(["underlying", "expiry"]).size().eq(2 * S).all()
    assert (market["expiry"] > 0).all() and (market["strike"] > 0).all()


def test_any_range_is_generated_identically(market):
    part = synthetic.market(N, E, S, heston_share=0.5, include_defects=True, start=2, stop=4)
    expected = market[market["underlying"].isin(["SYN00002", "SYN00003"])]
    pd.testing.assert_frame_equal(part, expected.reset_index(drop=True), check_exact=True)


def test_days_move_parameters_a_little():
    day0 = synthetic.market_parameters(0, 50, day=0)
    day1 = synthetic.market_parameters(0, 50, day=1)
    move = np.log(day1["spot"] / day0["spot"])
    assert 0 < move.abs().max() < 0.1  # daily moves of 1.5% sd: none above ~6 sd
    assert (day0["model"] == day1["model"]).all()


def test_listed_style_strike_grids(market):
    for _, grid in market[market["option_type"] == "C"].groupby(["underlying", "expiry"]):
        steps = np.diff(grid["strike"].to_numpy())
        assert (steps > 0).all()
        inner = steps[len(steps) // 2]
        assert np.allclose(steps % inner, 0, atol=1e-9) or np.allclose(
            steps / inner, np.round(steps / inner), atol=1e-9)  # wings: multiples of the step
        assert steps.max() == pytest.approx(2 * steps.min())


def test_quotes_on_the_tick_grid_and_defect_shares(market):
    clean = market["defect"] == synthetic.Defect.NONE
    tick = np.where(market["ask"] < 3.0, 0.05, 0.10)
    on_grid = np.abs(market["ask"] / tick - np.round(market["ask"] / tick)) < 1e-6
    assert on_grid[clean].mean() > 0.99  # asks above 3.00 rounded on the 0.10 grid
    assert (market["bid"][clean] <= market["ask"][clean]).all()
    crossed = market["defect"] == synthetic.Defect.CROSSED
    assert (market["bid"][crossed] > market["ask"][crossed]).all()
    assert (market["bid"][market["defect"] == synthetic.Defect.ZERO_BID] == 0).all()
    share = (~clean).mean()
    # 3% requested; 8,640 rows give a binomial sd of 0.18%, zero-bid draws on rows already at
    # 0 are dropped: 1% .. 5% covers it
    assert 0.01 < share < 0.05


def test_clean_mids_bracket_the_model_prices(market):
    # the true price lies within [bid, ask] for clean rows: re-price SSVI rows with Black
    params = synthetic.market_parameters(0, N, heston_share=0.5).set_index("underlying")
    rows = market[(market["defect"] == 0)].copy()
    p = params.loc[rows["underlying"]]
    forward = p["spot"].to_numpy() * np.exp((p["rate"] - p["div"]).to_numpy() * rows["expiry"])
    discount = np.exp(-p["rate"].to_numpy() * rows["expiry"])
    prices, _ = synthetic._prices(params.reset_index(), *_grid_of(market, params))
    flat = prices.ravel()[rows.index.to_numpy()]
    assert (rows["bid"] <= flat + 1e-12).all() and (flat <= rows["ask"] + 1e-12).all()
    assert np.isfinite(forward).all() and (discount <= 1).all()


def _grid_of(market, params):
    shape = (N, E, 2 * S)
    strike = market["strike"].to_numpy().reshape(shape)
    expiry = market["expiry"].to_numpy().reshape(shape)[:1, :, :1]
    is_call = (market["option_type"] == "C").to_numpy().reshape(shape)
    return strike, expiry, is_call, np.ones((N, 1, 1))


def test_spx_board():
    board = synthetic.spx_board()
    assert len(board) == 2 * (186 + 128)
    assert board["expiry"].nunique() == 2
    assert board["rate"].notna().all()


def test_fx_quotes_calibrate():
    quotes = synthetic.fx_quotes(2)
    result = jaxvol.fx.calibrate_smile(
        spot=quotes["spot"].to_numpy(), expiry=quotes["expiry"].to_numpy(),
        rd=quotes["rd"].to_numpy(), rf=quotes["rf"].to_numpy(), atm=quotes["atm"].to_numpy(),
        rr25=quotes["rr25"].to_numpy(), bf25=quotes["bf25"].to_numpy(), delta_type="spot",
        atm_type="dns", model="vanna_volga")  # the nightly job's call (shared compilation)
    assert (np.asarray(result.status) == 0).all()
