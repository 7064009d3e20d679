"""FX smiles: delta and ATM conventions, strike from delta, market strangle to smile
calibration (polynomial in delta, SABR, vanna-volga), surfaces across tenors, quote tables."""

from jaxvol.fx.conventions import (
    AtmType, DeltaType, StrikeFromDelta, StrikeStatus, atm_strike, delta, max_call_delta_pa,
    rate_from_discount, strike_from_delta)
from jaxvol.fx.polynomial import polynomial_vol
from jaxvol.fx.strangle import SmileCalibration, SmileModel, SmileStatus, calibrate_smile
from jaxvol.fx.surface import FXVolSurface
from jaxvol.fx.table import calibrate_quotes
from jaxvol.fx.vannavolga import vanna_volga_vol

__all__ = [
    "AtmType", "DeltaType", "FXVolSurface", "SmileCalibration", "SmileModel", "SmileStatus", "StrikeFromDelta",
    "StrikeStatus", "atm_strike", "calibrate_quotes", "calibrate_smile", "delta", "max_call_delta_pa",
    "polynomial_vol", "rate_from_discount", "strike_from_delta", "vanna_volga_vol",
]
