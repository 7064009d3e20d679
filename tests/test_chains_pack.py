"""Packing ragged chains into bucketed batches; trace-count guard; round trips."""

import numpy as np
import pandas as pd
import pytest

import jaxvol
from jaxvol.chains import api, pack, slice_capacity, strike_capacity
from jaxvol.chains.boards import black_board


def test_bucket_sizes():
    counts = [1, 8, 9, 60, 64, 65, 512, 600]
    np.testing.assert_array_equal(strike_capacity(counts, (8, 16, 64, 512)),
                                  [8, 8, 16, 64, 64, 512, 512, 1024])
    assert [slice_capacity(n, 64) for n in (1, 8, 9, 64, 65, 130)] == [8, 8, 16, 64, 128, 192]
    with pytest.raises(ValueError, match="slice_block"):
        pack(pd.DataFrame(), np.zeros(0), slice_block=100)


def _ragged_board(n_underlyings, seed):
    """Slices with 3..40 strikes (some strikes missing at random), rows shuffled."""
    board, _ = black_board(n_underlyings, 2, 40, seed=seed)
    rng = np.random.default_rng(seed)
    slice_id = board.groupby(["underlying", "expiry"]).ngroup().to_numpy()
    keep_count = rng.integers(3, 41, slice_id.max() + 1)[slice_id]
    strike_rank = board.groupby(["underlying", "expiry"])["strike"].rank(method="dense")
    return board[strike_rank.to_numpy() <= keep_count].sample(frac=1.0, random_state=seed)


def test_one_compile_per_bucket_across_many_slices():
    # slice_block=8: every batch is cut into [8, width] blocks, so each block kernel (forwards,
    # vols, checks) is traced once per strike bucket (widths 8, 16, 32, 64 here) whatever the
    # number of slices, and the
    # calendar kernel once per run shape.  A second board with a different number of
    # underlyings and slices must not trace anything new.
    options = dict(slice_block=8, strike_buckets=(8, 16, 32, 64))
    first = _ragged_board(30, seed=1)      # 60 slices
    before = dict(api.TRACE_COUNTS)
    result = jaxvol.chains.compute(first, **options)
    widths = {b.strike.shape[1] for b in result.packed.batches}
    assert len(result.packed.slices) == 60 and len(widths) >= 3
    for kernel in ("forwards", "vols", "checks"):
        assert api.TRACE_COUNTS[kernel] - before[kernel] <= len(widths)
    assert api.TRACE_COUNTS["calendar"] - before["calendar"] <= 1
    second = _ragged_board(23, seed=2)     # 46 slices, other strike counts
    before = dict(api.TRACE_COUNTS)
    again = jaxvol.chains.compute(second, **options)
    assert {b.strike.shape[1] for b in again.packed.batches} <= widths
    assert api.TRACE_COUNTS == before


def test_cells_round_trip_to_rows():
    board = _ragged_board(5, seed=3)
    frame = jaxvol.chains.validate(board)
    flags = jaxvol.chains.row_flags(frame)
    packed = pack(frame, flags, strike_buckets=(8, 16, 32, 64))
    assert (packed.row_batch >= 0).all()                        # a clean board: all packed
    back = jaxvol.chains.unpack_cells(packed, [b.call_bid for b in packed.batches],
                                      [b.put_bid for b in packed.batches])
    np.testing.assert_array_equal(back, frame["bid"].to_numpy())
    strikes = jaxvol.chains.unpack_cells(packed, [b.strike for b in packed.batches],
                                         [b.strike for b in packed.batches])
    np.testing.assert_array_equal(strikes, frame["strike"].to_numpy())
    for batch in packed.batches:   # strike grids sorted, calls and puts on the same grid
        left, right = batch.strike[:, :-1], batch.strike[:, 1:]
        both = np.isfinite(left) & np.isfinite(right)
        assert (right[both] > left[both]).all()
        assert not (np.isnan(left) & np.isfinite(right)).any()   # padding only at the end
        assert not (batch.call_mask & np.isnan(batch.strike)).any()
    counts = packed.slices["n_strikes"].to_numpy()
    expected = frame.groupby(["underlying", "expiry"])["strike"].nunique().to_numpy()
    np.testing.assert_array_equal(counts, expected)


def test_float32_batches_and_results():
    # float32 end to end: batches and kernel outputs in float32; forwards within float32
    # round-off of the float64 ones (1e-5 relative: ~100 eps32 through a 2x2 solve).
    board, truth = black_board(2, 2, 15, seed=4)
    r32 = jaxvol.chains.compute(board, dtype=np.float32)
    r64 = jaxvol.chains.compute(board)
    assert all(b.strike.dtype == np.float32 for b in r32.packed.batches)
    assert r32.slice_forwards.forward.dtype == np.float32
    assert r32.batch_results[0]["iv_mid"].dtype == np.float32
    np.testing.assert_allclose(r32.slice_forwards.forward, r64.slice_forwards.forward,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        jaxvol.chains.compute(board, dtype=np.int32)
