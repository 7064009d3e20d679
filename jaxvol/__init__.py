"""jaxvol: batch volatility analytics in pure JAX.

Importing jaxvol never changes JAX's global configuration: enable float64 in your entry point
(``jax.config.update("jax_enable_x64", True)`` or :func:`jaxvol.configure`).
"""

from jaxvol._runtime import configure
from jaxvol import calibrate  # noqa: E402,F401  (batched Levenberg–Marquardt, optax path)
from jaxvol import indices  # noqa: E402,F401  (model-free variance, VIX/VXJ)
from jaxvol import chains  # noqa: E402,F401  (option chains: flags, packing, forwards, arbitrage)
from jaxvol import fx  # noqa: E402,F401  (FX conventions, strangles, smiles)

__all__ = ["configure"]
__version__ = "0.1.0"
