"""The Cboe VIX methodology worked example, shipped in ``jaxvol/data/cboe_vix_example.csv``.

Source: Cboe Global Markets, "Cboe Volatility Index (VIX) Mathematics Methodology" (the worked
example, the same quote board as the 2014 VIX white paper); see jaxvol/data/README.md.
"""

from __future__ import annotations

import importlib.resources
from typing import NamedTuple

__all__ = ["CboeExample", "load_cboe_example", "PUBLISHED"]


class CboeExample(NamedTuple):
    """Inputs of the published example; ``cboe_vix(**example._asdict())`` reproduces it."""

    near: object          # pandas DataFrame: strike, call_bid, call_ask, put_bid, put_ask
    next: object
    near_minutes: float   # 34,484
    next_minutes: float   # 44,954
    near_rate: float      # 0.031664 % continuous
    next_rate: float      # 0.028797 % continuous


PUBLISHED = {
    "forward": (1962.89996, 1962.40006),
    "k0": (1960.0, 1960.0),
    "strike_count": (146, 122),
    "variance": (0.019233906, 0.019423884),
    "target_volatility": 0.13927842,
    "index": 13.93,
}
"""Published results of the example (Cboe methodology document)."""


def load_cboe_example() -> CboeExample:
    """Near/next quote tables, minutes to expiry and rates of the Cboe VIX worked example."""
    import pandas as pd

    source = importlib.resources.files("jaxvol") / "data" / "cboe_vix_example.csv"
    with source.open("r") as handle:
        quotes = pd.read_csv(handle)
    tables = {term: group.drop(columns="term").sort_values("strike").reset_index(drop=True)
              for term, group in quotes.groupby("term")}
    return CboeExample(tables["near"], tables["next"], 34_484.0, 44_954.0,
                       0.031664e-2, 0.028797e-2)
