"""Quality flags: a board holding every kind of bad row at once; nothing is dropped."""

import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol.chains import Flag, compute, flagged
from jaxvol.chains.boards import black_board


def _bad_board():
    """A clean 2-expiry board plus one row (or slice) per defect; returns (board, expected)."""
    board, truth = black_board(1, 2, 15, seed=11)
    board = board.copy()
    expected = {}  # row label -> flag that must be set
    early = truth["expiry"].iloc[0]
    f, d = truth["forward"].iloc[0], truth["discount"].iloc[0]
    slice0 = board[board["expiry"] == early]
    calls = slice0[slice0["option_type"] == "C"].sort_values("strike").index
    puts = slice0[slice0["option_type"] == "P"].sort_values("strike").index

    def edit(row, flag, **values):
        for column, value in values.items():
            board.at[row, column] = value
        expected[row] = flag

    edit(calls[0], Flag.NON_FINITE, bid=np.nan)
    edit(puts[1], Flag.NON_FINITE, ask=np.inf)
    edit(calls[2], Flag.CROSSED, bid=board.at[calls[2], "ask"] + 0.5)
    edit(puts[3], Flag.ZERO_BID, bid=0.0)
    edit(calls[4], Flag.LOCKED, bid=board.at[calls[4], "ask"])
    edit(puts[5], Flag.WIDE_SPREAD, bid=0.1 * board.at[puts[5], "ask"])
    edit(calls[12], Flag.NON_POSITIVE_PRICE, bid=-0.01)
    # deep in-the-money call whose ask is below discounted intrinsic value
    # Margins of a few price units below: the bad rows near the money (the locked quote above
    # all) move the fitted F, D; measured shift of D (F - K) at these strikes < 0.6.
    # deep in-the-money call whose ask is below discounted intrinsic value
    edit(calls[1], Flag.BELOW_INTRINSIC, bid=d * (f - board.at[calls[1], "strike"]) - 3.5,
         ask=d * (f - board.at[calls[1], "strike"]) - 3.0)
    # far out-of-the-money call quoted above the discounted forward
    edit(calls[14], Flag.ABOVE_MAX_PRICE, bid=d * f + 5.0, ask=d * f + 5.5)
    # deep in-the-money put, quote straddling intrinsic with the mid below it: no mid vol
    intrinsic = d * (board.at[puts[14], "strike"] - f)
    edit(puts[14], Flag.IV_UNSOLVED, bid=intrinsic - 8.0, ask=intrinsic + 2.0)
    extra = [board.loc[[calls[7]]].assign(),                                   # duplicate
             board.loc[[calls[8]]].assign(strike=0.0),                         # zero strike
             board.loc[[puts[8]]].assign(strike=-5.0),                         # negative
             board.loc[[puts[9]]].assign(strike=np.nan),                       # NaN strike
             board.loc[board["expiry"] == early].assign(expiry=0.0,            # expired slice
                                                        underlying="EXPIRED"),
             board.loc[calls[3:5]].assign(underlying="THIN"),                  # 2 strikes, C only
             board.loc[np.r_[calls[6:8], puts[6:8]]].assign(underlying="TWO")]  # 2 pairs
    labels = ["dup", "zero_k", "neg_k", "nan_k", "expired", "thin", "two"]
    for label, part in zip(labels, extra):
        part.index = [f"{label}{i}" for i in range(len(part))]
    board = pd.concat([board] + extra)
    expected.update({"zero_k0": Flag.NON_POSITIVE_STRIKE,
                     "neg_k0": Flag.NON_POSITIVE_STRIKE, "nan_k0": Flag.NON_FINITE})
    expected.update({label: Flag.EXPIRED | Flag.NO_FORWARD | Flag.SLICE_TOO_FEW_STRIKES
                     for label in board.index if str(label).startswith("expired")})
    expected.update({label: Flag.NO_FORWARD | Flag.SLICE_TOO_FEW_STRIKES
                     for label in board.index if str(label).startswith("thin")})
    expected.update({label: Flag.SLICE_TOO_FEW_STRIKES
                     for label in board.index if str(label).startswith("two")})
    board.index = [f"r{i}" if not isinstance(i, str) else i for i in board.index]
    expected = {f"r{k}" if not isinstance(k, str) else k: v for k, v in expected.items()}
    board = board.sample(frac=1.0, random_state=0)
    # of the two identical rows, the one coming later in the input is the duplicate
    pair = [label for label in board.index if label in ("dup0", f"r{calls[7]}")]
    expected[pair[1]] = Flag.DUPLICATE
    return board, expected


@pytest.fixture(scope="module")
def bad():
    board, expected = _bad_board()
    result = compute(board)
    return board, expected, result, jaxvol.chains.rows_frame(result)


def test_every_bad_row_gets_its_flag(bad):
    board, expected, _, out = bad
    for label, flag in expected.items():
        got = int(out.at[label, "quality_flags"])
        assert got & int(flag) == int(flag), (label, flag, jaxvol.chains.describe(got))


def test_clean_rows_stay_clean(bad):
    # The original clean rows of both expiries that were not edited carry no excluding flag,
    # so one bad quote never spills over onto its neighbours.
    board, expected, _, out = bad
    clean = [r for r in out.index if r.startswith("r") and r not in expected]
    flags = out.loc[clean, "quality_flags"].to_numpy()
    assert len(clean) > 40
    assert not flagged(flags, jaxvol.chains.DEFAULT_EXCLUDE).any(), [
        jaxvol.chains.describe(v) for v in flags if v]


def test_nothing_dropped_same_index_and_order(bad):
    board, _, _, out = bad
    assert out.index.equals(board.index)
    pd.testing.assert_frame_equal(out[board.columns], board)
    for column in ("quality_flags", "forward", "discount", "iv_bid", "iv_mid", "iv_ask"):
        assert column in out.columns
    assert out["quality_flags"].dtype == np.int64


def test_duplicate_keeps_the_first_row_only(bad):
    board, expected, _, out = bad
    key = ["underlying", "expiry", "strike", "option_type"]
    same = (board[key] == board.loc["dup0", key]).all(axis=1)
    first, second = board.index[same.to_numpy()]
    assert expected[second] == Flag.DUPLICATE and first not in expected
    assert not flagged(out.at[first, "quality_flags"], Flag.DUPLICATE)
    assert np.isfinite(out.at[first, "iv_mid"]) and np.isnan(out.at[second, "iv_mid"])


def test_duplicate_prefers_a_clean_row():
    # First copy crossed, second clean: the clean one is kept, the crossed one is the duplicate.
    board, _ = black_board(1, 1, 9, seed=12)
    bad_copy = board.iloc[[4]].assign(bid=board["ask"].iloc[4] + 1.0)
    table = pd.concat([bad_copy, board], ignore_index=True)
    flags = compute(table).quality_flags
    assert flags[0] & int(Flag.DUPLICATE) and flags[0] & int(Flag.CROSSED)
    assert not flagged(flags[1:], Flag.DUPLICATE).any()


def test_row_index_round_trip_through_the_packed_cells(bad):
    board, _, result, _ = bad
    packed = result.packed
    has_cell = packed.row_batch >= 0
    frame = result.frame
    # exactly the rows that cannot have a cell have none
    no_cell_expected = (~np.isfinite(frame["strike"]) | (frame["strike"] <= 0)
                        | flagged(result.quality_flags, Flag.DUPLICATE)).to_numpy()
    np.testing.assert_array_equal(~has_cell, no_cell_expected)
    for field in ("strike", "bid", "ask"):
        calls = [getattr(b, "strike" if field == "strike" else f"call_{field}")
                 for b in packed.batches]
        puts = [getattr(b, "strike" if field == "strike" else f"put_{field}")
                for b in packed.batches]
        back = jaxvol.chains.unpack_cells(packed, calls, puts)
        np.testing.assert_array_equal(back[has_cell], frame[field].to_numpy()[has_cell])
    expiry = jaxvol.chains.unpack_slices(packed, [b.expiry for b in packed.batches])
    np.testing.assert_array_equal(expiry[has_cell], frame["expiry"].to_numpy()[has_cell])


def test_excluded_quotes_are_masked_out_of_the_batch(bad):
    _, _, result, _ = bad
    packed = result.packed
    mask = jaxvol.chains.unpack_cells(packed, [b.call_mask for b in packed.batches],
                                      [b.put_mask for b in packed.batches], fill=False)
    quote_bad = flagged(jaxvol.chains.row_flags(result.frame), jaxvol.chains.DEFAULT_EXCLUDE)
    np.testing.assert_array_equal(mask.astype(bool), ~quote_bad & (packed.row_batch >= 0))


def test_describe_and_flag_values():
    assert jaxvol.chains.describe(int(Flag.CROSSED | Flag.ZERO_BID)) == ["CROSSED", "ZERO_BID"]
    assert len({int(f) for f in Flag}) == len(list(Flag))  # distinct bits
