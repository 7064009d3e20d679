"""Static and calendar no-arbitrage diagnostics: constructed violations with known sizes."""

import jax
import numpy as np
import pandas as pd
import pytest

from jaxvol.chains import Relation, arbitrage_report, calendar_arbitrage, static_arbitrage
from jaxvol.chains.boards import black_board, black_prices

STRIKES = np.array([90.0, 100.0, 110.0, 120.0, 130.0])
F, D, T, VOL = 105.0, 0.95, 1.0, 0.2
CALL = black_prices(F, STRIKES, T, VOL, True, D)
PUT = black_prices(F, STRIKES, T, VOL, False, D)


def _case(call=None, put=None, half_spread=0.0, call_mask=None):
    """One slice: exact Black quotes (bid = ask unless ``half_spread``), edited mids."""
    c, p = CALL.copy(), PUT.copy()
    for i, v in (call or {}).items():
        c[i] = v
    for i, v in (put or {}).items():
        p[i] = v
    mask = np.ones(5, bool) if call_mask is None else call_mask
    return (STRIKES, c - half_spread, c + half_spread, p - half_spread, p + half_spread, mask,
            np.ones(5, bool))


# (case, relation, strike index, size): sizes follow the definitions in jaxvol.chains.arbitrage
CASES = [
    (_case(call={2: CALL[1] + 0.3}), Relation.CALL_MONOTONIC, 1, 0.3),
    (_case(call={1: CALL[2] + D * 10 + 0.2}), Relation.CALL_MONOTONIC, 1, 0.2),
    (_case(put={1: PUT[2] + 0.25}), Relation.PUT_MONOTONIC, 1, 0.25),
    (_case(put={2: PUT[1] + D * 10 + 0.15}), Relation.PUT_MONOTONIC, 1, 0.15),
    (_case(call={2: 0.5 * (CALL[1] + CALL[3]) + 0.25}), Relation.CALL_CONVEXITY, 2, 0.25),
    (_case(put={2: 0.5 * (PUT[1] + PUT[3]) + 0.1}), Relation.PUT_CONVEXITY, 2, 0.1),
    (_case(call={0: D * (F - 90.0) - 0.4}), Relation.CALL_BOUNDS, 0, 0.4),
    (_case(call={4: D * F + 0.7}), Relation.CALL_BOUNDS, 4, 0.7),
    (_case(put={4: D * (130.0 - F) - 0.3}), Relation.PUT_BOUNDS, 4, 0.3),
    (_case(put={0: D * 90.0 + 0.6}), Relation.PUT_BOUNDS, 0, 0.6),
    (_case(call={2: CALL[2] + 0.45}), Relation.PARITY, 2, 0.45),
]
# Cases where nothing may be reported: exact quotes; a convexity break of 0.1 at the mids of
# calls and (through parity) puts inside spreads of +-0.2 (the most favourable prices satisfy
# it); an absurd quote that is masked.
_KINKED = 0.5 * (CALL[1] + CALL[3]) + 0.1
CLEAN = [_case(), _case(call={2: _KINKED}, put={2: _KINKED - D * (F - 110.0)}, half_spread=0.2),
         _case(call={3: 1000.0}, call_mask=np.array([True, True, True, False, True]))]


@pytest.fixture(scope="module")
def static_result():
    cases = [c for c, *_ in CASES] + CLEAN
    arrays = [np.stack(parts) for parts in zip(*cases)]
    n = len(cases)
    kernel = jax.jit(static_arbitrage, static_argnames="tolerance")
    return jax.device_get(kernel(*arrays, np.full(n, F), np.full(n, D), tolerance=1e-10))


@pytest.mark.parametrize("index", range(len(CASES)))
def test_constructed_violation_has_its_size(static_result, index):
    _, relation, strike_index, size = CASES[index]
    # 1e-12: the sizes are differences of O(100) prices, a few ulps
    np.testing.assert_allclose(static_result.size[index, relation, strike_index], size,
                               atol=1e-12)
    assert static_result.count[index, relation] >= 1
    assert static_result.worst[index, relation] >= size - 1e-12


def test_nothing_reported_when_the_quotes_allow_it(static_result):
    clean = slice(len(CASES), None)
    assert (static_result.size[clean] == 0).all()
    assert (static_result.worst[clean] == 0).all() and (static_result.count[clean] == 0).all()


def test_calendar_kernel_sizes():
    k1 = np.array([-0.35, -0.25, -0.15, -0.05, 0.05, 0.15, 0.25])
    w1 = 0.05 + 0.1 * k1**2
    k2 = np.linspace(-0.4, 0.4, 9)
    cases = [0.04 + 0.02 * k2,               # below w1 everywhere: size w1 - w2 (linear: exact)
             np.full(9, 0.2),                # above: nothing
             np.where(np.abs(k2) < 0.25, 0.04 + 0.02 * k2, np.nan)]  # only k in [-0.2, 0.2]
    result = jax.device_get(calendar_arbitrage(np.stack([k1] * 3), np.stack([w1] * 3),
                                               np.stack([k2] * 3), np.stack(cases)))
    expected = w1 - (0.04 + 0.02 * k1)
    np.testing.assert_allclose(result.size[0, 0], expected, atol=1e-15)
    np.testing.assert_allclose(result.worst[0, 0], expected.max(), atol=1e-15)
    assert result.worst_strike[0, 0] == -0.35
    assert (result.size[1] == 0).all()
    inside = np.abs(k1) < 0.2
    np.testing.assert_allclose(result.size[2, 0], np.where(inside, expected, 0.0), atol=1e-15)


def _flat_two_expiry_board(vol_late):
    """Flat-vol board, expiries 0.5 (vol 0.3) and 0.75 (vol_late); bid = ask; F, D given."""
    parts = []
    for expiry, vol in ((0.5, 0.3), (0.75, vol_late)):
        strikes = np.linspace(80.0, 125.0, 10)
        for is_call in (True, False):
            price = black_prices(100.0, strikes, expiry, vol, is_call, 0.99)
            parts.append(pd.DataFrame({"underlying": "X", "expiry": expiry, "strike": strikes,
                                       "option_type": "C" if is_call else "P", "bid": price,
                                       "ask": price, "forward": 100.0, "discount": 0.99}))
    return pd.concat(parts, ignore_index=True)


def test_calendar_violation_through_the_report():
    # total variance 0.3^2 * 0.5 = 0.045 early vs 0.2^2 * 0.75 = 0.03 late: size 0.015.
    # 1e-9: the vols come from the foundation's implied_vol (machine precision) on exact prices.
    report = arbitrage_report(_flat_two_expiry_board(0.2))
    calendar = report[report["relation"] == "calendar"].set_index("expiry")
    assert calendar.loc[0.5, "size"] == pytest.approx(0.015, abs=1e-9)
    assert calendar.loc[0.5, "violations"] == 10
    assert np.isnan(calendar.loc[0.75, "size"])     # no later expiry to compare with
    static = report[report["relation"] != "calendar"]
    assert (static["size"] == 0).all()
    clean = arbitrage_report(_flat_two_expiry_board(0.3))
    assert (clean.loc[clean["relation"] == "calendar", "size"].fillna(0.0) == 0).all()


def test_clean_black_boards_report_nothing():
    # Exact Black prices of an arbitrage-free smile inside small spreads, forwards estimated.
    board, _ = black_board(3, 3, 15, seed=21)
    report = arbitrage_report(board, slice_block=8)  # blocks of 8: a shape the suite shares
    assert len(report) == 9 * len(Relation)
    assert list(report["relation"].cat.categories) == [r.name.lower() for r in Relation]
    static = report[report["relation"] != "calendar"]
    assert (static["size"] == 0).all() and (static["violations"] == 0).all()
    calendar = report[report["relation"] == "calendar"]
    assert (calendar["size"].fillna(0.0) == 0).all()
    assert calendar["size"].isna().sum() == 3      # the last expiry of each underlying


def test_report_finds_a_violation_in_a_board():
    board, truth = black_board(3, 3, 15, seed=21)
    merged = board.merge(truth, on=["underlying", "expiry"])
    table = merged.drop(columns="atm_vol")      # F and D supplied: sizes are exact
    target = (table["underlying"] == "U00001") & (table["option_type"] == "P")
    first = table.loc[target, "expiry"].min()
    rows = table[target & (table["expiry"] == first)].sort_values("strike").index
    k6, k7, k8 = table.loc[rows[6:9], "strike"]
    weight = (k8 - k7) / (k8 - k6)
    lifted = weight * table.loc[rows[6], "ask"] + (1 - weight) * table.loc[rows[8], "ask"] + 0.05
    table.loc[rows[7], ["bid", "ask"]] = [lifted, lifted + 0.01]
    report = arbitrage_report(table, slice_block=8)
    hit = report[(report["relation"] == "put_convexity") & report["violated"]]
    assert len(hit) == 1 and hit["underlying"].iloc[0] == "U00001"
    assert hit["expiry"].iloc[0] == first
    assert hit["size"].iloc[0] == pytest.approx(0.05, abs=1e-10)
    assert hit["worst_strike"].iloc[0] == table.loc[rows[7], "strike"]
