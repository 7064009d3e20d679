"""Configuration of the nightly job: a schema, TOML loading, validation and a TOML writer.

Every key has a type and a default; a TOML file may set any subset. Unknown sections or keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the bad key (for example
``svi.max_iterations``) and the file it came from.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import tomllib
from typing import Any, Callable

__all__ = ["ConfigError", "SCHEMA", "default_config", "load_config", "validate_config",
           "dump_toml", "merge_overrides"]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: its Python type, default, an optional check and a help line."""

    kind: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    coerce: Callable[[Any], Any] | None = None
    """Maps a legacy spelling to the key's type before the checks (e.g. a boolean
    ``svi.no_arbitrage`` to its mode string)."""


SVI_NO_ARBITRAGE_MODES = ("off", "repair", "penalty")
SVI_PRIORS = ("none", "ssvi")


def _svi_mode(value):
    """``svi.no_arbitrage`` as a mode string: the booleans of old configs keep their meaning
    (``false`` = "off", ``true`` = "penalty", as in :func:`jaxvol.svi.fit`)."""
    if isinstance(value, bool):
        return "penalty" if value else "off"
    return value


def _positive(value) -> bool:
    return value > 0


def _non_negative(value) -> bool:
    return value >= 0


def _share(value) -> bool:
    return 0.0 <= value < 1.0


def _positive_list(value) -> bool:
    return len(value) > 0 and all(isinstance(v, (int, float)) and v > 0 for v in value)


SCHEMA: dict[str, dict[str, Key]] = {
    "job": {
        "name": Key(str, "nightly", "name shown in the report and run log"),
        "chunk_underlyings": Key(int, 250, "underlyings per chunk (bounds memory)", _positive,
                                 "> 0"),
        "devices": Key(int, 0, "local devices to shard over (0 = all)", _non_negative, ">= 0"),
        "fail_fast": Key(bool, False, "re-raise a stage error instead of logging it"),
        "slice_block": Key(int, 256, "slices per device per compiled call of the per-slice "
                           "fits (fixed, so every chunk and device count runs one program)",
                           _positive, "> 0"),
        "underlying_block": Key(int, 32, "underlyings per device per compiled call of the "
                                "per-underlying fits (Heston, SSVI, indices)", _positive, "> 0"),
    },
    "market": {
        "underlyings": Key(int, 2000, "synthetic underlyings when no --input", _positive, "> 0"),
        "expiries": Key(int, 8, "expiries per underlying", lambda v: 2 <= v <= 8, "2..8"),
        "strikes": Key(int, 40, "strikes per expiry", lambda v: 8 <= v <= 200, "8..200"),
        "seed": Key(int, 20261121, "seed of the generated market"),
        "day": Key(int, 0, "market day (parameters drift slowly from day to day)",
                   _non_negative, ">= 0"),
        "heston_share": Key(float, 0.3, "share of underlyings priced from Heston (rest SSVI)",
                            lambda v: 0.0 <= v <= 1.0, "0..1"),
        "bad_row_share": Key(float, 0.03, "share of rows made bad (crossed, zero bid, stale)",
                             _share, "0 <= x < 1"),
        "include_spx": Key(bool, True, "append the real SPX board of the Cboe VIX example"),
    },
    "input": {
        "path": Key(str, "", "chains table (Parquet or CSV); empty = synthetic market"),
        "day_count": Key(str, "ACT/365F", "day count of date/timestamp expiries: year "
                         "fraction = (expiry - quote_time) / days, days = 365 (ACT/365F), "
                         "365.25 or 360", lambda v: v in ("ACT/365F", "ACT/365.25", "ACT/360"),
                         "ACT/365F, ACT/365.25 or ACT/360"),
    },
    "chains": {
        "max_relative_spread": Key(float, 0.0, "flag spreads wider than this share of mid "
                                   "(0 = the chains layer's default)", _non_negative, ">= 0"),
        "min_strikes": Key(int, 5, "usable strikes a slice needs to be fitted", _positive, "> 0"),
        "arbitrage": Key(bool, True, "run the static no-arbitrage report"),
        "carry_tolerance": Key(float, 1e-6, "relative gap between a row's forward or discount "
                               "and its slice's median beyond which the row is flagged "
                               "INCONSISTENT_CARRY and left out of the fits",
                               lambda v: v > 0, "> 0"),
        "forward_tolerance": Key(float, 1e-3, "relative gap between a supplied forward and the "
                                 "put-call parity forward beyond which (and beyond 4 parity "
                                 "standard errors) the slice is flagged FORWARD_MISMATCH "
                                 "(informational: the supplied forward is still used)",
                                 lambda v: v > 0, "> 0"),
    },
    "svi": {
        "enabled": Key(bool, True, "fit raw SVI per slice"),
        "max_iterations": Key(int, 60, "Levenberg-Marquardt iterations", _positive, "> 0"),
        "no_arbitrage": Key(str, "repair", "static arbitrage in the SVI fit (svi.fit's "
                            "no_arbitrage): repair = the plain fit, then the slices violating "
                            "Lee's bound or Durrleman g >= 0 refitted with them as penalties "
                            "(the default), off = the plain fit only, penalty = every slice "
                            "penalised; true/false of older configs mean penalty/off",
                            lambda v: v in SVI_NO_ARBITRAGE_MODES, "off, repair or penalty",
                            coerce=_svi_mode),
        "prior": Key(str, "ssvi", "weak prior of the SVI fit (svi.fit's prior): ssvi = "
                     "pseudo-quotes of the slice's SSVI smile (the SSVI stage, which runs "
                     "first, at that expiry) over the quoted range, half its width beyond and "
                     "two points further out, so that short noisy slices do not run to rho = "
                     "+-1 or the sigma floor (the default: closer to the synthetic truth in "
                     "every bucket, docs/benchmarks.md issue 20); none = the plain fit. Slices "
                     "without an SSVI smile (stage off or failed) get the plain fit",
                     lambda v: v in SVI_PRIORS, "none or ssvi"),
        "prior_weight": Key(float, 0.5, "weight of each of the prior's 13 pseudo-quotes, "
                            "relative to the root-mean-square weight (1 / vol spread) of the "
                            "slice's quotes", _non_negative, ">= 0"),
        "warm_start": Key(bool, False, "on a warm night start from yesterday's SVI parameters "
                          "(off: svi.fit's own start fitted small noisy slices better)"),
    },
    "sabr": {
        "enabled": Key(bool, True, "fit SABR per slice"),
        "beta": Key(float, 1.0, "fixed SABR beta", lambda v: 0.0 <= v <= 1.0, "0..1"),
        "max_iterations": Key(int, 60, "Levenberg-Marquardt iterations", _positive, "> 0"),
    },
    "ssvi": {
        "enabled": Key(bool, True, "fit an SSVI surface per underlying"),
        "phi": Key(str, "power_law", "SSVI phi(theta) form", lambda v: v in (
            "heston", "power_law"), "heston or power_law"),
        "max_iterations": Key(int, 60, "Levenberg-Marquardt iterations", _positive, "> 0"),
    },
    "heston": {
        "enabled": Key(bool, True, "fit Heston per underlying"),
        "strikes_per_expiry": Key(int, 8, "out-of-the-money quotes per expiry used in the fit",
                                  _positive, "> 0"),
        "max_iterations": Key(int, 30, "Levenberg-Marquardt iterations", _positive, "> 0"),
        "nodes": Key(int, 32, "Fourier quadrature nodes per contour in the fit (jaxvol.heston."
                     "price: 96 gives 1e-10; fewer suffice against bid/ask noise)",
                     lambda v: v >= 8, ">= 8"),
        "contours": Key(int, 2, "integration contours per smile in the fit", lambda v: v >= 2
                        and v % 2 == 0, "an even integer >= 2"),
    },
    "indices": {
        "enabled": Key(bool, True, "Cboe-method and VXJ-method indices"),
        "target_days": Key(int, 30, "index tenor in days", _positive, "> 0"),
        "term_days": Key(list, [9, 30, 60, 91, 182, 365], "VXJ term structure tenors (days)",
                         _positive_list, "non-empty list of positive numbers"),
    },
    "fx": {
        "quotes": Key(str, "", "FX quotes table (Parquet/CSV); empty = no FX stage"),
        "model": Key(str, "vanna_volga", "FX smile model",
                     lambda v: v in ("polynomial", "sabr", "vanna_volga"),
                     "one of polynomial, sabr, vanna_volga"),
    },
    "warm_start": {
        "max_iterations": Key(int, 20, "fit iterations when starting from yesterday's "
                              "parameters", _positive, "> 0"),
    },
    "report": {
        "enabled": Key(bool, True, "write report.html"),
        "sample_slices": Key(int, 6, "slices shown in the sample panel", _non_negative, ">= 0"),
        "worst_slices": Key(int, 6, "worst-fitted slices shown", _non_negative, ">= 0"),
    },
}


def default_config() -> dict[str, dict[str, Any]]:
    """The embedded default configuration (the same values as configs/nightly.toml)."""
    return {section: {name: copy.deepcopy(key.default) for name, key in keys.items()}
            for section, keys in SCHEMA.items()}


def _check_value(section: str, name: str, value: Any, source: str) -> Any:
    key = SCHEMA[section][name]
    where = f"{section}.{name}"
    origin = f" (in {source})" if source else ""
    if key.coerce is not None:
        value = key.coerce(value)
    if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and key.kind is not bool:
        raise ConfigError(f"{where} must be {key.kind.__name__}, got a boolean {value!r}{origin}")
    if not isinstance(value, key.kind):
        raise ConfigError(f"{where} must be {key.kind.__name__}, got "
                          f"{type(value).__name__} {value!r}{origin}")
    if key.check is not None and not key.check(value):
        raise ConfigError(f"{where} = {value!r} is out of range (must be {key.rule}){origin}")
    return value


def validate_config(raw: dict, source: str = "") -> dict[str, dict[str, Any]]:
    """Defaults updated by ``raw`` (nested dict as read from TOML), checked key by key."""
    config = default_config()
    for section, values in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}]" + (f" in {source}" if source else "")
                              + f"; known sections: {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be a table ([{section}]), got {values!r}"
                              + (f" (in {source})" if source else ""))
        for name, value in values.items():
            if name not in SCHEMA[section]:
                raise ConfigError(f"unknown key {section}.{name}"
                                  + (f" in {source}" if source else "")
                                  + f"; known keys of [{section}]: {', '.join(SCHEMA[section])}")
            config[section][name] = _check_value(section, name, value, source)
    return config


def load_config(path: str | pathlib.Path | None) -> dict[str, dict[str, Any]]:
    """Read and validate a TOML file; ``None`` gives the embedded default."""
    if path is None:
        return default_config()
    path = pathlib.Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return validate_config(raw, str(path))


def merge_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """Apply dotted overrides such as ``{"market.underlyings": 20000}`` (validated)."""
    raw = {section: dict(values) for section, values in config.items()}
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if not name:
            raise ConfigError(f"override {dotted!r} must be section.key")
        raw.setdefault(section, {})[name] = value
    return validate_config(raw, "overrides")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(config: dict[str, dict[str, Any]]) -> str:
    """The configuration as TOML text (round-trips through :func:`load_config`)."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{name} = {_toml_value(value)}" for name, value in values.items())
        lines.append("")
    return "\n".join(lines)
