"""Local volatility: implied surfaces as JAX functions, Gatheral/Dupire local vol by autodiff,
local-volatility Monte Carlo and Heston stochastic-local volatility (particle calibration)."""

from jaxvol.localvol.gatheral import (LVStatus, LocalVol, SimulationPolicy, SurfaceDiagnostics,
                                      apply_policy, call_prices, diagnostics, dupire_local_vol,
                                      local_vol, local_vol_parts, violation_summary)
from jaxvol.localvol.montecarlo import (METHODS, LocalVolGrid, european_mc, tabulate,
                                        time_grid)
from jaxvol.localvol.slv import HestonSLV, SLVCalibration, calibrate_slv, slv_european_mc
from jaxvol.localvol.surface import (SSVISurface, SVISurface, flat_surface, from_tables,
                                     interval_weights)

__all__ = ["HestonSLV", "LVStatus", "LocalVol", "LocalVolGrid", "METHODS", "SLVCalibration",
           "SSVISurface", "SVISurface", "SimulationPolicy", "SurfaceDiagnostics", "apply_policy",
           "call_prices", "calibrate_slv", "diagnostics", "dupire_local_vol", "european_mc",
           "flat_surface", "from_tables", "interval_weights", "local_vol", "local_vol_parts",
           "slv_european_mc", "tabulate", "time_grid", "violation_summary"]
