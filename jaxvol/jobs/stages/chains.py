"""Chain stages: ``analyze`` (jaxvol.chains.compute: quality flags, forwards, bid/mid/ask
implied vols), ``arbitrage`` (jaxvol.chains.report), ``pack`` (the per-slice OTM arrays)."""

from __future__ import annotations

import pandas as pd

from jaxvol import chains
from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import Chunk, JobEnv, ensure_batch

__all__ = ["analyze", "arbitrage", "pack"]


def _chain_options(env: JobEnv) -> dict:
    section = env.config["chains"]
    options = {key: section[key] for key in ("min_strikes", "carry_tolerance",
                                             "forward_tolerance")}
    if env.config["chains"]["max_relative_spread"] > 0:
        options["max_relative_spread"] = env.config["chains"]["max_relative_spread"]
    return options


def analyze(chunk: Chunk, env: JobEnv) -> None:
    """chains.compute once (flags, forwards, IVs, arbitrage), then its per-row frame."""
    table = chunk.rows.drop(columns=["row_id"])
    chunk.analysis = chains.compute(table, **_chain_options(env))
    result = chains.rows_frame(chunk.analysis)
    if len(result) != len(table):
        raise RuntimeError(f"chains.analyze returned {len(result)} rows for {len(table)}")
    new = [c for c in result.columns if c not in chunk.rows.columns]
    chunk.rows = pd.concat([chunk.rows, result[new].set_axis(chunk.rows.index)], axis=1)


def arbitrage(chunk: Chunk, env: JobEnv) -> None:
    if not env.config["chains"]["arbitrage"]:
        raise StageUnavailable("disabled by chains.arbitrage = false")
    if chunk.analysis is None:
        raise StageUnavailable("needs the analyze stage")
    chunk.arbitrage = pd.DataFrame(chains.report(chunk.analysis)).reset_index(drop=True)


def pack(chunk: Chunk, env: JobEnv) -> None:
    """Per-slice OTM arrays and the slice table (forward, discount, usable quotes)."""
    ensure_batch(chunk, env)
