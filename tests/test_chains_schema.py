"""Input schema: validation errors, renamed columns, timestamps, files; IVs on the SPX board."""

import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol.chains import SchemaError, analyze, validate
from jaxvol.chains.boards import black_board


@pytest.fixture(scope="module")
def board():
    return black_board(1, 2, 9, seed=31)[0]


def test_missing_column_is_named(board):
    with pytest.raises(SchemaError, match="'ask'"):
        validate(board.drop(columns="ask"))


def test_mistyped_values_name_column_and_rows(board):
    bad = board.copy()
    bad.index = [f"q{i}" for i in range(len(bad))]
    bad["strike"] = bad["strike"].astype(object)
    bad.loc["q3", "strike"] = "abc"
    with pytest.raises(SchemaError, match=r"'strike'.*q3"):
        validate(bad)
    bad = board.copy()
    bad["option_type"] = bad["option_type"].astype(object)
    bad.loc[5, "option_type"] = "X"
    with pytest.raises(SchemaError, match=r"'option_type'.*\[5\]"):
        validate(bad)
    bad = board.copy()
    bad.loc[2, "underlying"] = None
    with pytest.raises(SchemaError, match=r"'underlying'.*\[2\]"):
        validate(bad)
    with pytest.raises(ValueError, match="not_an_option"):
        analyze(board, not_an_option=1)


def test_renamed_columns_and_option_words(board):
    renamed = board.rename(columns={"strike": "K", "option_type": "cp", "bid": "b"})
    renamed["cp"] = renamed["cp"].map({"C": "Call", "P": "put"})
    out = analyze(renamed, columns={"strike": "K", "option_type": "cp", "bid": "b"})
    reference = analyze(board)
    assert list(out.columns[:len(renamed.columns)]) == list(renamed.columns)
    np.testing.assert_array_equal(out["forward"], reference["forward"])
    np.testing.assert_array_equal(out["quality_flags"], reference["quality_flags"])


def test_timestamp_expiries_use_act_365(board):
    quote = pd.Timestamp("2026-11-21 16:00")
    stamped = board.assign(quote_time=quote,
                           expiry=quote + pd.to_timedelta(board["expiry"] * 365.0, unit="D"))
    frame = validate(stamped)
    np.testing.assert_allclose(frame["expiry"], board["expiry"], rtol=1e-12)
    with pytest.raises(SchemaError, match="quote_time"):
        validate(stamped.drop(columns="quote_time"))


def test_csv_and_parquet_files(board, tmp_path):
    reference = validate(board)
    for name, write in (("chain.csv", lambda p: board.to_csv(p, index=False)),
                        ("chain.parquet", lambda p: board.to_parquet(p))):
        write(tmp_path / name)
        loaded = jaxvol.chains.load(tmp_path / name)
        pd.testing.assert_frame_equal(loaded, reference, check_exact=False, rtol=1e-15)
    out = jaxvol.chains.analyze(str(tmp_path / "chain.csv"))
    assert len(out) == len(board)


def test_mid_column_replaces_bid_ask_average(board):
    with_mid = board.assign(mid=board["bid"] + 0.25 * (board["ask"] - board["bid"]))
    frame = validate(with_mid)
    np.testing.assert_array_equal(frame["mid"], with_mid["mid"])


def test_spx_board_implied_vols_are_ordered_and_plausible():
    # Real SPX quotes (Cboe VIX worked example).  Wherever bid, mid and ask vols all solve they
    # must be ordered (vol is increasing in price), every usable row must have a mid vol, and
    # the at-the-money mid vols must be near the published index level (VIX 13.93: the near
    # and next ATM vols lie within 0.10-0.16).
    from test_chains_forwards import cboe_board
    out = analyze(cboe_board(), strike_buckets=(16, 32, 64, 256))
    solved = out[["iv_bid", "iv_mid", "iv_ask"]].notna().all(axis=1)
    assert solved.sum() > 300
    assert (out.loc[solved, "iv_bid"] <= out.loc[solved, "iv_mid"]).all()
    assert (out.loc[solved, "iv_mid"] <= out.loc[solved, "iv_ask"]).all()
    assert out.loc[out["usable"], "iv_mid"].notna().all()
    atm = out[out["strike"] == 1960]
    assert ((atm["iv_mid"] > 0.10) & (atm["iv_mid"] < 0.16)).all()
    assert len(out) == len(cboe_board())


# ------------------------------------------------------------------ bad cells (issue 21)
def test_bad_cells_flag_their_rows_when_asked(board):
    from jaxvol.chains import Flag, flagged
    bad = board.astype({"bid": object, "option_type": object}).copy()
    bad.loc[3, "bid"] = "abc"
    bad.loc[4, "bid"] = True            # a boolean is not the number 1.0
    bad.loc[5, "option_type"] = "X"
    out = analyze(bad, bad_values="flag")
    assert flagged(out["quality_flags"][[3, 4]], Flag.BAD_VALUE).all()
    assert flagged(out["quality_flags"][[5]], Flag.BAD_OPTION_TYPE).all()
    assert not out["usable"][[3, 4, 5]].any() and np.isnan(out["iv_mid"][[3, 4, 5]]).all()
    # by default a boolean in a number column is an error too (it used to read as 1.0)
    with pytest.raises(SchemaError, match=r"'bid'.*\[4\]"):
        validate(bad.drop(index=[3, 5]))


def test_empty_frame_gives_an_empty_result(board):
    from jaxvol.chains import arbitrage_report
    out = analyze(board.iloc[:0])
    assert len(out) == 0 and {"quality_flags", "usable", "iv_mid"} <= set(out.columns)
    assert len(arbitrage_report(board.iloc[:0])) == 0


def test_one_bad_spot_does_not_move_the_slice_forward(board):
    from jaxvol.chains import Flag, flagged
    carry = board.assign(spot=100.0, rate=0.02)
    first = carry.groupby("expiry").head(1).index    # first row of each slice
    moved = carry.copy()
    moved.loc[first, "spot"] = 120.0                  # 20% off on the first row
    huge = carry.copy()
    huge.loc[first, "spot"] = 1e308
    reference = validate(carry)
    for table in (moved, huge):
        frame = validate(table)
        # every row takes the slice's median (the bad row cannot set the slice's forward)
        np.testing.assert_array_equal(frame["forward"], reference["forward"])
        assert flagged(frame["input_flags"][first], Flag.INCONSISTENT_CARRY).all()
        assert not flagged(frame["input_flags"].drop(index=first), Flag.INCONSISTENT_CARRY).any()


@pytest.fixture(scope="module")
def carried():
    """The board with spot, rate and dividend yield that give its true forwards (so the
    supplied forwards agree with put-call parity), and the board's truth."""
    board, truth = black_board(1, 2, 9, seed=31)
    merged = board.merge(truth, on=["underlying", "expiry"], how="left")
    rate = -np.log(merged["discount"]) / merged["expiry"]
    dividend = rate - np.log(merged["forward"] / 100.0) / merged["expiry"]
    return board.assign(spot=100.0, rate=rate, dividend_yield=dividend), truth


def test_one_bad_spot_moves_no_forward_and_no_other_vol(carried):
    # Issue 21: one spot 20% off on the first row of a slice moved the slice's forward
    # (251.95; 209.96 with the rows reversed) and 32 vols; spot = 1e308 gave usable puts at
    # iv 249.  Now: exact equality with the clean run on every other row, in either row order
    # (the median and the strike-sorted grid do not depend on row order).
    from jaxvol.chains import Flag, flagged
    table, _ = carried
    clean = analyze(table)
    assert not flagged(clean["quality_flags"],
                       Flag.INCONSISTENT_CARRY | Flag.FORWARD_MISMATCH).any()
    first = table.groupby("expiry").head(1).index
    others = table.index.difference(first)
    for spot in (120.0, 1e308):
        bad = table.copy()
        bad.loc[first, "spot"] = spot
        for order in (bad, bad.iloc[::-1]):
            out = analyze(order).loc[table.index]
            np.testing.assert_array_equal(out["forward"], clean["forward"])
            np.testing.assert_array_equal(out["discount"], clean["discount"])
            for side in ("iv_bid", "iv_mid", "iv_ask"):
                np.testing.assert_array_equal(out.loc[others, side], clean.loc[others, side])
            flags = out["quality_flags"]
            assert flagged(flags[first], Flag.INCONSISTENT_CARRY).all()
            assert not out.loc[first, "usable"].any()
            assert not flagged(flags[others], Flag.INCONSISTENT_CARRY).any()
            assert not flagged(flags, Flag.FORWARD_MISMATCH).any()
            np.testing.assert_array_equal(out.loc[others, "usable"], clean.loc[others, "usable"])
            puts = out[out["usable"] & (out["option_type"] == "P")]
            assert len(puts) and (puts["iv_mid"] < 1.0).all()   # board vols are ~0.2


def test_supplied_forward_is_cross_checked_against_parity(carried):
    # A whole slice with a consistent but wrong spot (5% off: no row disagrees with the slice)
    # is caught by put-call parity: FORWARD_MISMATCH on that slice's rows only, the supplied
    # forward still used, parity_forward the true one (exact quotes: 1e-10 as in
    # test_chains_forwards).  A gap of 1e-5 is below forward_tolerance (1e-3): no flag.
    from jaxvol.chains import Flag, flagged
    table, truth = carried
    late = table["expiry"] == table["expiry"].max()
    for scale, expect in ((1.05, True), (1.00001, False)):
        moved = table.assign(spot=np.where(late, 100.0 * scale, 100.0))
        out = analyze(moved)
        mismatch = flagged(out["quality_flags"], Flag.FORWARD_MISMATCH)
        np.testing.assert_array_equal(mismatch, late & expect)
        assert out["usable"][late].any()          # informational: the rows stay usable
        true = out[["underlying", "expiry"]].merge(truth, how="left")["forward"].to_numpy()
        np.testing.assert_allclose(out["parity_forward"], true, rtol=1e-10)
        np.testing.assert_allclose(out.loc[late, "forward"], true[late] * scale, rtol=1e-12)
    strict = analyze(table.assign(spot=np.where(late, 105.0, 100.0)),
                     exclude=int(jaxvol.chains.DEFAULT_EXCLUDE | Flag.FORWARD_MISMATCH))
    assert not strict["usable"][late].any() and strict["usable"][~late].any()


def test_iv_status_of_every_side(board):
    # why iv_bid is NaN: a zero bid has no vol, and its status says so (not OK), per side
    from jaxvol import IVStatus
    zero = board.copy()
    zero.loc[0, "bid"] = 0.0
    out = analyze(zero)
    for side in ("bid", "mid", "ask"):
        status = out[f"iv_{side}_status"].to_numpy()
        solved = np.isfinite(out[f"iv_{side}"].to_numpy())
        assert (status[solved] == IVStatus.OK).all() and (status[~solved] != 0).all()
    assert out["iv_bid_status"][0] != IVStatus.OK and np.isnan(out["iv_bid"][0])
