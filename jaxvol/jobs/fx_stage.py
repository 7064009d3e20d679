"""FX smiles for the nightly job: ``jaxvol.fx.calibrate_smile`` over a quotes table.

The table (config ``fx.quotes``, Parquet or CSV) has one row per pair and tenor with columns
``pair``, ``tenor``, ``spot``, ``expiry`` (years), ``rd``, ``rf`` (continuous), ``atm``,
``rr25``, ``bf25`` (decimals), optional ``rr10``, ``bf10``, ``delta_type``, ``atm_type``.
Rows are grouped by conventions and each group is calibrated in one vmapped call.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pandas as pd

from jaxvol.fx import calibrate_smile
from jaxvol.jobs.errors import StageUnavailable

__all__ = ["run", "calibrate_table"]

RESULT_FIELDS = ("forward", "k_atm", "ms_value", "smile_strangle", "status")


def _read(path: str) -> pd.DataFrame:
    path = pathlib.Path(path)
    return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(
        path)


def _as_columns(result, n: int) -> dict[str, np.ndarray]:
    """Flatten a calibrate_smile result into per-row columns (pairs such as k25 -> _call/_put)."""
    columns = {}
    for name in ("forward", "k_atm", "ms_value", "smile_strangle", "status", "ms_strikes",
                 "k25", "vol25", "k10", "vol10"):
        value = getattr(result, name, None)
        if value is None:
            continue
        if isinstance(value, (tuple, list)):
            for side, part in zip(("call", "put"), value):
                columns[f"{name}_{side}"] = np.broadcast_to(np.asarray(part), (n,))
            continue
        array = np.asarray(value)
        if array.ndim == 2 and array.shape[-1] == 2:
            columns[f"{name}_call"], columns[f"{name}_put"] = array[:, 0], array[:, 1]
        elif array.ndim <= 1:
            columns[name] = np.broadcast_to(array, (n,))
    params = np.asarray(result.params).reshape(n, -1)
    for i in range(params.shape[1]):
        columns[f"param_{i}"] = params[:, i]
    return columns


def calibrate_table(quotes: pd.DataFrame, model: str) -> pd.DataFrame:
    """Smile per row of ``quotes`` (one calibrate_smile call per convention group)."""
    quotes = quotes.reset_index(drop=True).copy()
    quotes["delta_type"] = quotes.get("delta_type", "spot")
    quotes["atm_type"] = quotes.get("atm_type", "dns")
    parts = []
    for (delta_type, atm_type), group in quotes.groupby(["delta_type", "atm_type"], sort=False):
        kwargs = {name: group[name].to_numpy(np.float64)
                  for name in ("spot", "expiry", "rd", "rf", "atm", "rr25", "bf25")}
        for name in ("rr10", "bf10") if model != "vanna_volga" else ():  # VV: 25-delta only
            if name in group and group[name].notna().all():
                kwargs[name] = group[name].to_numpy(np.float64)
        result = calibrate_smile(**kwargs, delta_type=delta_type, atm_type=atm_type, model=model)
        parts.append(pd.DataFrame(_as_columns(result, len(group)), index=group.index))
    return pd.concat([quotes, pd.concat(parts).sort_index()], axis=1)


def run(config: dict, out: pathlib.Path) -> dict:
    """The FX stage of the merge step: returns its stage-log entry."""
    started = time.perf_counter()
    entry = {"chunk": -1, "stage": "fx", "status": "ok", "message": ""}
    try:
        if not config["fx"]["quotes"]:
            raise StageUnavailable("no FX quotes table (fx.quotes is empty)")
        table = calibrate_table(_read(config["fx"]["quotes"]), config["fx"]["model"])
        table.to_parquet(out / "fx.parquet", index=False)
    except StageUnavailable as reason:
        entry.update(status="skipped", message=str(reason))
    except Exception as error:  # noqa: BLE001 - recorded in the run log
        if config["job"]["fail_fast"]:
            raise
        entry.update(status="failed", message=f"{type(error).__name__}: {error}")
    entry["seconds"] = time.perf_counter() - started
    return entry
