"""jaxvol: batch volatility analytics in pure JAX.

Importing jaxvol never changes JAX's global configuration: enable float64 in your entry point
(``jax.config.update("jax_enable_x64", True)`` or :func:`jaxvol.configure`).
"""

from jaxvol._runtime import configure
from jaxvol import black, special  # noqa: F401  (prices, greeks, normalised Black, erfcx)
from jaxvol.black import (Greeks, bachelier_price, black_price, bsm_greeks, bsm_price,
                          greeks)
from jaxvol.implied import IVStatus, ImpliedVol, implied_normal_vol, implied_vol
from jaxvol import calibrate  # noqa: E402,F401  (batched Levenberg–Marquardt, optax path)
from jaxvol.smile import sabr, ssvi, svi  # noqa: E402,F401  (smile models: jaxvol.svi, .ssvi, .sabr)
from jaxvol import indices  # noqa: E402,F401  (model-free variance, VIX/VXJ)
from jaxvol import chains  # noqa: E402,F401  (option chains: flags, packing, forwards, arbitrage)
from jaxvol import fx  # noqa: E402,F401  (FX conventions, strangles, smiles)
from jaxvol import heston  # noqa: E402,F401  (Heston pricing and calibration)
from jaxvol import synthetic  # noqa: E402,F401  (deterministic synthetic markets; jaxvol.jobs: nightly job)
from jaxvol import leadlag  # noqa: E402,F401  (lead–lag on asynchronous ticks: HY, HRY contrast)

__all__ = [
    "configure", "black_price", "bsm_price", "bachelier_price", "greeks", "bsm_greeks",
    "Greeks", "implied_vol", "implied_normal_vol", "ImpliedVol", "IVStatus",
]
__version__ = "0.1.0"
