"""The data dictionary written beside the nightly job's tables (``data_dictionary.md``).

One line per column of every table the run wrote: its type, its unit and what it means. Units
are stated once here instead of in every column name: vols are annualised decimals (0.2 = 20%),
``*_rmse`` of the smile fits is in vol (decimal), the Heston RMSE is in vega-scaled price
(approximately vol), index values are in vol points (20 = 20%), times in years (ACT/365F when
built from dates).
"""

from __future__ import annotations

import pathlib
import re

import pandas as pd

__all__ = ["COLUMNS", "PATTERNS", "describe_column", "write_dictionary"]

#: Exact column names: (unit, meaning).
COLUMNS = {
    "row_id": ("count", "the row's position in the input table (0-based data row; CSV line "
               "= row_id + 2)"),
    "underlying": ("text", "identifier of the underlying, as written in the input"),
    "expiry": ("years", "time to expiry (year fraction; ACT/365F by default from dates)"),
    "expiry_date": ("timestamp", "expiry as given in the input (when it gave dates)"),
    "expiry_input": ("text", "the expiry cell as written in the input (when it gave dates)"),
    "strike": ("price", "strike"),
    "option_type": ("text", "C or P as given (anything else is flagged BAD_OPTION_TYPE)"),
    "bid": ("price", "best bid (NaN where the cell was missing or unreadable)"),
    "ask": ("price", "best ask (NaN where the cell was missing or unreadable)"),
    "mid": ("price", "mid price given in the input"),
    "spot": ("price", "spot given in the input"),
    "rate": ("1/year", "continuously compounded rate given in the input"),
    "dividend_yield": ("1/year", "continuous dividend yield given in the input"),
    "quote_time": ("timestamp", "time of the quotes"),
    "input_flags": ("bit field", "problems found reading the row (bits of "
                    "jaxvol.chains.Flag: BAD_VALUE, BAD_OPTION_TYPE, MISSING_KEY, "
                    "INCONSISTENT_CARRY)"),
    "quality_flags": ("bit field", "every finding about the row (jaxvol.chains.Flag bits; "
                      "includes input_flags)"),
    "quality_flag_names": ("text", "names of the bits set in quality_flags, comma-separated"),
    "usable": ("bool", "no excluding flag: the row may enter forwards and fits"),
    "forward": ("price", "the slice's forward (parity regression or supplied)"),
    "discount": ("factor", "the slice's discount factor to expiry"),
    "forward_se": ("price", "standard error of the forward"),
    "discount_se": ("factor", "standard error of the discount factor"),
    "parity_forward": ("price", "the slice's forward from put-call parity alone (the check of a "
                       "supplied forward; NaN where parity gives none)"),
    "forward_mismatch": ("bool", "the supplied forward and parity_forward disagree (rows "
                         "flagged FORWARD_MISMATCH; the supplied forward is used)"),
    "failed_stages": ("text", "stages that failed on this slice or underlying, with the "
                      "reason (empty when none)"),
    "iv_bid": ("vol", "Black implied vol of the bid (NaN where none solves)"),
    "iv_mid": ("vol", "Black implied vol of the mid"),
    "iv_ask": ("vol", "Black implied vol of the ask"),
    "iv_svi": ("vol", "fitted SVI vol at the row's strike"),
    "iv_bid_status": ("code", "jaxvol.IVStatus of the bid's implied vol (why iv_bid is NaN)"),
    "iv_mid_status": ("code", "jaxvol.IVStatus of the mid's implied vol"),
    "iv_ask_status": ("code", "jaxvol.IVStatus of the ask's implied vol"),
    "n_quotes": ("count", "usable out-of-the-money quotes of the slice"),
    "n_one_sided": ("count", "one-sided out-of-the-money quotes beyond the slice's two-sided "
                    "ones, used as bounds of the SVI smile: no bid (zero or missing), the ask's "
                    "total variance above; no ask, the bid's total variance below"),
    "near_expiry": ("years", "near term of the 30-day indices"),
    "next_expiry": ("years", "next term of the 30-day indices"),
    "relation": ("text", "static no-arbitrage relation checked"),
    "size": ("price", "size of the worst violation (total variance for calendar)"),
    "violations": ("count", "violating strikes"),
    "worst_strike": ("price", "strike of the worst violation"),
    "violated": ("bool", "size > 0"),
    "heston_quotes": ("count", "quotes in the Heston fit"),
    "heston_rmse": ("vega-scaled price", "RMS of (model - market price) / vega: about vol"),
    "excluded_quotes": ("count", "quotes the index screen left out"),
}

#: Patterns for families of columns: (regex, unit, meaning with {0} the first group).
PATTERNS = [
    (r"^(.*)_status$", "code", "status code of {0} (jaxvol.status numbering; 0 = OK/CONVERGED)"),
    (r"^(.*)_status_name$", "text", "name of {0}_status"),
    (r"^(.*)_rmse$", "vol", "RMS error of the {0} fit in implied vol (decimal)"),
    (r"^(.*)_iterations$", "count", "iterations of the {0} fit"),
    (r"^(.*)_previous$", "bool", "{0} parameters are yesterday's (today's fit failed)"),
    (r"^svi_(a|b|rho|m|sigma)$", "raw SVI", "raw SVI parameter {0} (total variance)"),
    (r"^sabr_(.*)$", "SABR", "SABR parameter {0}"),
    (r"^ssvi_(.*)$", "SSVI", "SSVI parameter {0}"),
    (r"^heston_(v0|theta)$", "variance", "Heston {0}"),
    (r"^heston_(kappa)$", "1/year", "Heston mean reversion {0}"),
    (r"^heston_(sigma|rho)$", "Heston", "Heston {0}"),
    (r"^cboe_(\d+)d$", "vol points", "Cboe-method {0}-day index (20 = 20%)"),
    (r"^vxj_(\d+)d$", "vol points", "VXJ-method {0}-day index (20 = 20%)"),
    (r"^vxj_term_(\d+)d$", "vol points", "VXJ-method constant-maturity {0}-day index"),
]


def describe_column(name: str) -> tuple[str, str]:
    """(unit, meaning) of one output column; ("", "") if unknown."""
    if name in COLUMNS:
        return COLUMNS[name]
    for pattern, unit, meaning in PATTERNS:
        match = re.match(pattern, name)
        if match:
            return unit, meaning.format(*match.groups())
    return "", "input column, passed through"


def write_dictionary(out: pathlib.Path, tables: dict) -> pathlib.Path:
    """Write ``data_dictionary.md`` (every column of ``tables`` and rows.parquet)."""
    import pyarrow.parquet as pq

    from jaxvol.jobs.pipeline import write_atomic
    out = pathlib.Path(out)
    schemas = {}
    if (out / "rows.parquet").exists():
        schema = pq.read_schema(out / "rows.parquet")
        schemas["rows"] = [(f.name, str(f.type)) for f in schema]
    for name, table in tables.items():
        if isinstance(table, pd.DataFrame):
            schemas[name] = [(c, str(t)) for c, t in table.dtypes.items()]
    lines = ["# Data dictionary", "",
             "Units: vol = annualised decimal (0.2 = 20%); vol points = percent; years = "
             "year fractions; codes = jaxvol.status numbering (0 = OK / CONVERGED).", ""]
    for name, columns in schemas.items():
        lines += [f"## {name}.parquet", "", "| column | type | unit | meaning |",
                  "| --- | --- | --- | --- |"]
        for column, kind in columns:
            unit, meaning = describe_column(column)
            lines.append(f"| {column} | {kind} | {unit} | {meaning} |")
        lines.append("")
    path = out / "data_dictionary.md"
    text = "\n".join(lines)
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path
