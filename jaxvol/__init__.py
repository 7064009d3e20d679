"""jaxvol: batch volatility analytics in pure JAX.

Importing jaxvol never changes JAX's global configuration: enable float64 in your entry point
(``jax.config.update("jax_enable_x64", True)`` or :func:`jaxvol.configure`) and, to reuse
compiled programs across processes, call :func:`jaxvol.enable_compilation_cache`.

The Black/Bachelier functions load with the package; the domains (``jaxvol.heston``,
``jaxvol.svi``, ``jaxvol.chains``, ...) load on first use, so ``import jaxvol`` stays light
(no pandas, pyarrow or matplotlib until a function that needs them runs).
"""

from jaxvol._runtime import configure, default_cache_dir, enable_compilation_cache
from jaxvol import black, special  # noqa: F401  (prices, greeks, normalised Black, erfcx)
from jaxvol.black import (Greeks, bachelier_price, black_price, bsm_greeks, bsm_price,
                          greeks)
from jaxvol.implied import IVStatus, ImpliedVol, implied_normal_vol, implied_vol

# Subpackages load on first attribute access (PEP 562), by plain deferred imports
# (``import jaxvol.x``: ``from jaxvol import x`` would re-enter this hook).
def _load(name):  # noqa: C901  (one plain import per lazily loaded name)
    if name == "calibrate":
        import jaxvol.calibrate as module  # batched Levenberg–Marquardt, optax path
    elif name == "smile":
        import jaxvol.smile as module
    elif name == "sabr":
        import jaxvol.smile.sabr as module  # smile models: jaxvol.svi, .ssvi, .sabr
    elif name == "ssvi":
        import jaxvol.smile.ssvi as module
    elif name == "svi":
        import jaxvol.smile.svi as module
    elif name == "indices":
        import jaxvol.indices as module  # model-free variance, VIX/VXJ
    elif name == "chains":
        import jaxvol.chains as module  # option chains: flags, packing, forwards, arbitrage
    elif name == "fx":
        import jaxvol.fx as module  # FX conventions, strangles, smiles
    elif name == "heston":
        import jaxvol.heston as module  # Heston pricing and calibration
    elif name == "synthetic":
        import jaxvol.synthetic as module  # deterministic synthetic markets
    elif name == "status":
        import jaxvol.status as module
    elif name == "jobs":
        import jaxvol.jobs as module  # the nightly job
    elif name == "report":
        import jaxvol.report as module
    elif name == "implied":
        import jaxvol.implied as module
    elif name == "mc":
        import jaxvol.mc as module  # Monte Carlo engine: Heston schemes, general SV, payoffs
    elif name == "leadlag":
        import jaxvol.leadlag as module  # lead–lag on asynchronous ticks: HY, HRY contrast
    elif name == "localvol":
        import jaxvol.localvol as module  # surfaces, Gatheral/Dupire, LV Monte Carlo, Heston-SLV
    elif name == "ou":
        import jaxvol.ou as module  # Ornstein–Uhlenbeck fits on irregular ticks
    elif name == "divergence":
        import jaxvol.divergence as module  # IV–spot divergence: fair IV, residuals, events
    else:
        return None
    return module


_LAZY = ("calibrate", "smile", "sabr", "ssvi", "svi", "indices", "chains", "fx", "heston",
         "synthetic", "status", "jobs", "report", "implied", "mc", "leadlag", "localvol", "ou", "divergence")


def __getattr__(name):
    module = _load(name) if name in _LAZY else None
    if module is None:
        raise AttributeError(f"module 'jaxvol' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "configure", "enable_compilation_cache", "default_cache_dir", "black_price", "bsm_price",
    "bachelier_price", "greeks", "bsm_greeks", "Greeks", "implied_vol", "implied_normal_vol",
    "ImpliedVol", "IVStatus",
]
__version__ = "0.1.0"
