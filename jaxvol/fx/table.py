"""Quotes table in, smiles table out: :func:`calibrate_quotes`.

Input columns (one row per pair and tenor): ``pair``, ``tenor``, ``expiry`` (years), ``spot``,
``rd``, ``rf`` (continuous), ``atm``, ``rr25``, ``bf25`` (decimals), optionally ``rr10``,
``bf10``, ``delivery`` (years), and the conventions ``delta_type`` and ``atm_type`` (strings, see
:mod:`jaxvol.fx.conventions`). Rows are grouped by conventions and by whether 10-delta quotes are
present; each group is one batched :func:`jaxvol.fx.calibrate_smile` call, padded to a power of
two so a nightly run compiles once per bucket. Every row gets a status: missing fields, unknown
conventions and bad quotes never stop the other rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxvol.batching import pad_leading, power_of_two
from jaxvol.fx.conventions import AtmType, DeltaType
from jaxvol.fx.strangle import SmileStatus, calibrate_smile

__all__ = ["calibrate_quotes", "REQUIRED_COLUMNS", "UNKNOWN_CONVENTION"]

REQUIRED_COLUMNS = ("pair", "tenor", "expiry", "spot", "rd", "rf", "atm", "rr25", "bf25",
                    "delta_type", "atm_type")
UNKNOWN_CONVENTION = -1  #: status of a row whose delta_type/atm_type string is not recognised
_QUOTE_COLUMNS = ("expiry", "spot", "rd", "rf", "atm", "rr25", "bf25", "rr10", "bf10",
                  "delivery")


def _known(value, enum_type) -> bool:
    return isinstance(value, str) and value.upper() in enum_type.__members__


def _group_rows(frame: pd.DataFrame):
    """{(delta_type, atm_type, with_10d): row positions} for rows with known conventions."""
    groups: dict[tuple, list[int]] = {}
    for i, (dt, at, rr10, bf10) in enumerate(zip(frame["delta_type"], frame["atm_type"],
                                                 frame["rr10"], frame["bf10"])):
        if _known(dt, DeltaType) and _known(at, AtmType):
            with_10d = bool(np.isfinite(rr10) or np.isfinite(bf10))
            groups.setdefault((dt.lower(), at.lower(), with_10d), []).append(i)
    return groups


def _padded(frame: pd.DataFrame, rows: list[int], column: str) -> np.ndarray:
    values = frame[column].to_numpy(np.float64)[rows]
    return pad_leading(values, power_of_two(len(rows)))


def _calibrate_group(frame, rows, key, model, options):
    delta_type, atm_type, with_10d = key
    quotes = {c: _padded(frame, rows, c) for c in _QUOTE_COLUMNS}
    quotes["delivery"] = np.where(np.isnan(quotes["delivery"]), quotes["expiry"],
                                  quotes["delivery"])
    if not with_10d:
        quotes.pop("rr10"), quotes.pop("bf10")
    result = calibrate_smile(**quotes, delta_type=delta_type, atm_type=atm_type, model=model,
                             **options)
    return _group_columns(result, len(rows), with_10d)


def _group_columns(result, n, with_10d):
    take = lambda a: np.asarray(a)[:n]  # noqa: E731
    columns = {"status": take(result.status), "forward": take(result.forward),
               "k_atm": take(result.k_atm), "ms_value": take(result.ms_value),
               "smile_strangle": take(result.smile_strangle)}
    pairs = {"ms": result.ms_strikes, "k25": result.k25, "vol25": result.vol25}
    if with_10d:
        pairs.update(ms10=result.ms10_strikes, k10=result.k10, vol10=result.vol10)
        columns.update(ms10_value=take(result.ms10_value),
                       smile_strangle10=take(result.smile_strangle10))
    for name, pair in pairs.items():
        columns[f"{name}_call"], columns[f"{name}_put"] = take(pair)[:, 0], take(pair)[:, 1]
    for j in range(result.params.shape[-1]):
        columns[f"param{j}"] = take(result.params)[:, j]
    return columns


def _normalised(quotes: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in quotes.columns]
    if missing:
        raise ValueError(f"quotes table lacks required columns {missing}")
    frame = quotes.reset_index(drop=True).copy()
    for column in _QUOTE_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame


def calibrate_quotes(quotes: pd.DataFrame, *, model="polynomial", **options) -> pd.DataFrame:
    """Calibrate every row of a quotes table; returns one output row per input row, in order.

    Output columns: ``pair``, ``tenor``, ``status`` (a :class:`SmileStatus` value, or
    ``UNKNOWN_CONVENTION``), ``status_name``, ``forward``, ``k_atm``, ``ms_call``/``ms_put``
    (market-strangle strikes), ``ms_value``, ``k25_call``/``k25_put``, ``vol25_call``/
    ``vol25_put``, ``smile_strangle``, the 10-delta equivalents for rows quoting them, and the
    model parameters ``param0..``. ``options`` go to :func:`calibrate_smile`.
    """
    frame = _normalised(quotes)
    out = pd.DataFrame({"pair": frame["pair"], "tenor": frame["tenor"],
                        "status": np.full(len(frame), UNKNOWN_CONVENTION, np.int64)})
    for key, rows in _group_rows(frame).items():
        for name, values in _calibrate_group(frame, rows, key, model, options).items():
            if name not in out:
                out[name] = np.nan
            out.loc[rows, name] = values
    out["status"] = out["status"].astype(np.int64)
    out.insert(3, "status_name", [_status_name(s) for s in out["status"]])
    return out


def _status_name(code: int) -> str:
    return "UNKNOWN_CONVENTION" if code == UNKNOWN_CONVENTION else SmileStatus(code).name
