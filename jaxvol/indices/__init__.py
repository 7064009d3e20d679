"""Model-free implied variance and volatility indices.

- :func:`cboe_vix` / :func:`cboe_vix_batch` / :func:`cboe_variance`: the Cboe VIX method.
- :func:`vxj_index` / :func:`vxj_index_batch` / :func:`vxj_variance` / :func:`smile_variance`:
  the VXJ Gaussian integral over the smile.
- :func:`fair_variance_strike`, :func:`replication_variance`, :func:`realized_variance`:
  variance swaps.
- :func:`term_structure`, :func:`interpolate_variance`: constant-maturity interpolation.
"""

from jaxvol.indices._example import PUBLISHED as CBOE_EXAMPLE_PUBLISHED
from jaxvol.indices._example import CboeExample, load_cboe_example
from jaxvol.indices.cboe import (CboeBatch, CboeStatus, CboeTerm, CboeVix, ScreenedQuotes,
                                 cboe_variance, cboe_vix, cboe_vix_batch, screen_quotes)
from jaxvol.indices.vxj import (VxjBatch, VxjIndex, VxjStatus, VxjTerm, smile_variance,
                               vxj_index, vxj_index_batch, vxj_variance,
                               vxj_variance_from_prices)
from jaxvol.indices.varswap import (fair_variance_strike, realized_variance,
                                    replication_variance, variance_term_structure)
from jaxvol.indices.term import (MINUTES_30_DAYS, MINUTES_PER_YEAR, TermStatus, TermStructure,
                                 interpolate_variance, term_structure, term_structure_status,
                                 variance_to_index)

__all__ = [
    "CBOE_EXAMPLE_PUBLISHED", "CboeBatch", "CboeExample", "CboeStatus", "CboeTerm", "CboeVix",
    "MINUTES_30_DAYS", "MINUTES_PER_YEAR", "cboe_variance", "cboe_vix", "cboe_vix_batch",
    "interpolate_variance", "load_cboe_example", "term_structure", "variance_to_index",
    "VxjBatch", "VxjIndex", "VxjStatus", "VxjTerm", "smile_variance", "vxj_index",
    "vxj_index_batch", "vxj_variance", "vxj_variance_from_prices",
    "fair_variance_strike", "realized_variance", "replication_variance",
    "variance_term_structure", "ScreenedQuotes", "screen_quotes", "TermStatus",
    "TermStructure", "term_structure_status",
]
