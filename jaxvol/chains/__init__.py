"""Option chains: schema, quality flags, packing into padded batches, parity forwards, implied
vols at bid/mid/ask, static no-arbitrage diagnostics.

Entry points: :func:`analyze` (one output row per input row) and :func:`arbitrage_report`
(one row per slice and relation).  Beneath them, for batch pipelines: :func:`load` /
:func:`validate` (table -> normalised frame), :func:`row_flags`, :func:`pack` (frame -> padded
:class:`ChainBatch` es), :func:`unpack_cells` / :func:`unpack_slices` (batch results -> rows),
:func:`parity_forwards`, :func:`quote_vols`, :func:`static_arbitrage`,
:func:`calendar_arbitrage` and :func:`compute` (the whole pipeline, all intermediate arrays).
"""

from jaxvol.chains.api import (ChainAnalysis, ChainOptions, analyze, arbitrage_report, compute,
                               report, rows_frame)
from jaxvol.chains.arbitrage import (ArbitrageResult, Relation, calendar_arbitrage,
                                     static_arbitrage)
from jaxvol.chains.flags import (DEFAULT_EXCLUDE, QUOTE_LEVEL, Flag, describe, flagged,
                                 row_flags)
from jaxvol.chains.forwards import ForwardResult, ForwardStatus, parity_forwards
from jaxvol.chains.implied import QuoteVols, quote_vols, total_variance_otm
from jaxvol.chains.pack import (ChainBatch, PackedChain, gather_slices, iter_blocks, pack,
                                slice_capacity, strike_capacity, unpack_cells, unpack_slices)
from jaxvol.chains.schema import (ChainSchema, SchemaError, load, make_schema, read_table,
                                  validate)

__all__ = [
    "ArbitrageResult", "ChainAnalysis", "ChainBatch", "ChainOptions", "ChainSchema",
    "DEFAULT_EXCLUDE", "Flag", "ForwardResult", "ForwardStatus", "PackedChain", "QUOTE_LEVEL",
    "QuoteVols", "Relation", "SchemaError", "analyze", "arbitrage_report", "calendar_arbitrage",
    "compute", "describe", "flagged", "gather_slices", "iter_blocks", "load", "make_schema", "pack",
    "parity_forwards", "quote_vols", "read_table", "report", "row_flags", "rows_frame",
    "slice_capacity",
    "static_arbitrage", "strike_capacity", "total_variance_otm", "unpack_cells", "unpack_slices",
    "validate",
]
