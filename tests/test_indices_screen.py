"""Quote screen of the model-free indices on the Cboe worked example (issue 21) and the
status of every term-structure value (issue 20).

Tolerance: an index built after leaving a few wing quotes out must stay within 0.05 vol points
of the clean one (the acceptance bound); without the screen the same faults move it by 10 to
150 points (measured below: fat-finger ask 168.6 against 13.93).
"""

import numpy as np
import pandas as pd
import pytest

from jaxvol.indices import (CboeStatus, TermStatus, VxjStatus, cboe_vix, load_cboe_example,
                            term_structure_status, vxj_index)


@pytest.fixture(scope="module")
def example():
    return load_cboe_example()


def _both(example, near, screen=True):
    kw = dict(near_minutes=example.near_minutes, next_minutes=example.next_minutes,
              near_rate=example.near_rate, next_rate=example.next_rate, screen=screen)
    return cboe_vix(near, example.next, **kw), vxj_index(near, example.next, **kw)


def _ok(result):
    return all(int(s) == 0 for s in result.status)


def test_faulty_quotes_are_excluded_or_reported(example):
    clean_cboe, clean_vxj = _both(example, example.near)
    assert _ok(clean_cboe) and _ok(clean_vxj) and clean_cboe.excluded == (0, 0)
    assert round(clean_cboe.index, 2) == 13.93                # the published value
    fat = example.near.copy()
    fat.loc[int(np.argmin(np.abs(fat["strike"] - 1800))), "put_ask"] = 1e6
    rng = np.random.default_rng(0)
    random_bids = example.near.assign(
        call_bid=rng.uniform(0, example.near["call_ask"].max(), len(example.near)))
    repeated = pd.concat([example.near, example.near.iloc[[50, 60, 70]]]).sort_values(
        "strike", kind="stable").reset_index(drop=True)
    unscreened, _ = _both(example, fat, screen=False)
    assert unscreened.index > 100                             # what the screen prevents
    for near in (fat, random_bids, repeated):
        for result, clean in zip(_both(example, near), (clean_cboe, clean_vxj)):
            assert not _ok(result) or (sum(result.excluded) > 0
                                       and abs(result.index - clean.index) < 0.05)
    fat_cboe, fat_vxj = _both(example, fat)
    assert fat_cboe.excluded == (1, 0) and _ok(fat_cboe)
    assert fat_cboe.index == pytest.approx(clean_cboe.index, abs=0.05)
    rep_cboe, _ = _both(example, repeated)
    assert rep_cboe.excluded == (6, 0) and rep_cboe.index == pytest.approx(
        clean_cboe.index, abs=1e-12)                          # exact copies: same strip


def test_vertical_spread_arbitrage_is_not_ok(example):
    near = example.near.copy()
    low = int(np.argmin(np.abs(near["strike"] - 1900)))
    high = int(np.argmin(np.abs(near["strike"] - 1950)))
    near.loc[high, "call_bid"] = near.loc[low, "call_ask"] + 1.0  # bid above a lower ask
    near.loc[high, "call_ask"] = near.loc[high, "call_bid"] + 0.5
    cboe, vxj = _both(example, near)
    assert cboe.status[0] == CboeStatus.ARBITRAGE and vxj.status[0] == VxjStatus.ARBITRAGE
    assert np.isfinite(cboe.index)


def test_term_structure_values_carry_a_status():
    # An upward term structure quoted from 90 days: the Cboe straight line in total variance
    # goes negative at 9 and 30 days (the old job wrote 0.0 there); inside the quotes it is OK.
    days = np.array([90.0, 180.0, 270.0, 365.0])
    vol = np.array([0.15, 0.25, 0.28, 0.30])
    targets = np.array([9.0, 30.0, 120.0, 365.0, 500.0]) * 1440.0
    out = term_structure_status(days[None] * 1440.0, vol[None] ** 2, np.ones((1, 4), bool),
                                targets)
    status = np.asarray(out.status[0])
    np.testing.assert_array_equal(status, [TermStatus.NEGATIVE_VARIANCE,
                                           TermStatus.NEGATIVE_VARIANCE, TermStatus.OK,
                                           TermStatus.OK, TermStatus.EXTRAPOLATED])
    index = np.asarray(out.index[0])
    assert np.isnan(index[:2]).all() and np.isfinite(index[2:]).all()
    assert index[3] == pytest.approx(30.0, abs=1e-9)          # the 365-day quote itself
    one = term_structure_status(days[None, :1] * 1440.0, vol[None, :1] ** 2,
                                np.ones((1, 1), bool), targets)
    assert (np.asarray(one.status) == TermStatus.TOO_FEW_POINTS).all()
    assert np.isnan(np.asarray(one.index)).all()
