"""Small numerical helpers shared by the FX modules (normal distribution, dtypes, safe masks).

The normal CDF/PDF come from :mod:`jaxvol.black` when it is available and from
``jax.scipy.special`` otherwise; both are accurate to machine precision in the tails.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy import special

try:  # the foundation's kernels, once they exist
    from jaxvol.black import norm_cdf, norm_pdf  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - transitional fallback
    def norm_cdf(x):
        """Standard normal CDF."""
        return special.ndtr(x)

    def norm_pdf(x):
        """Standard normal density."""
        return jnp.exp(-0.5 * x * x) * 0.3989422804014327


def norm_ppf(p):
    """Inverse standard normal CDF."""
    return special.ndtri(p)


def log_norm_cdf(x):
    """log N(x), accurate far into the left tail."""
    return special.log_ndtr(x)


def float_dtype(*values):
    """The common floating dtype of the array arguments (default float when all are Python)."""
    arrays = [v for v in values if v is not None and not isinstance(v, (bool, int, float))]
    if not arrays:
        return jnp.result_type(float)
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def as_float(value, dtype):
    """``value`` as an array of ``dtype`` (bools become 0/1 explicitly)."""
    return jnp.asarray(value).astype(dtype)


def safe(mask, value, fallback):
    """Replace ``value`` by ``fallback`` where ``mask`` is False (first half of a double where)."""
    return jnp.where(mask, value, fallback)
