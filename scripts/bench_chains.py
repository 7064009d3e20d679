"""Benchmark of the chains layer: pack + forwards + bid/mid/ask IVs + arbitrage report.

Board: ``black_board(U, E, N)`` (default 5,000 underlyings x 8 expiries x 60 strikes, a call and
a put per strike: 4.8 M rows), mids moved by up to half a half-spread.  Reports the wall time of
each stage (pandas/numpy vs JAX), a second, warm run (compiled kernels reused: the block kernel
is traced once per bucket shape, never per slice; the trace counts are printed), and the peer a
user would otherwise write, timed on a sample in the same run and scaled to the full board:
py_vollib_vectorized implied vols (bid/mid/ask) and a pandas groupby-apply least-squares parity
fit per slice (numpy.polyfit).

    .venv/bin/python scripts/bench_chains.py [--underlyings 5000 --expiries 8 --strikes 60]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--underlyings", type=int, default=5000)
    parser.add_argument("--expiries", type=int, default=8)
    parser.add_argument("--strikes", type=int, default=60)
    parser.add_argument("--peer-slices", type=int, default=2000)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()

    import jaxvol
    jaxvol.configure()
    import jax
    from jaxvol.chains import api
    from jaxvol.chains.boards import black_board

    print(f"jax {jax.__version__}, devices {jax.devices()}")
    start = time.perf_counter()
    board, truth = black_board(args.underlyings, args.expiries, args.strikes, seed=7, noise=0.5)
    print(f"board: {len(board):,} rows, {len(truth):,} slices "
          f"(generated in {time.perf_counter() - start:.1f} s)")

    for run in ("cold", "warm"):
        traces = dict(api.TRACE_COUNTS)
        total = time.perf_counter()
        result = jaxvol.chains.compute(board, dtype=np.dtype(args.dtype))
        t = dict(result.timings)
        with api._timed(t, "rows_frame"):
            rows = jaxvol.chains.rows_frame(result)
        with api._timed(t, "report"):
            report = jaxvol.chains.report(result)
        total = time.perf_counter() - total
        jax_s = t["jax_block"] + t["jax_calendar"]
        pandas_s = total - jax_s
        new = {k: api.TRACE_COUNTS[k] - traces[k] for k in traces}
        shapes = [b.strike.shape for b in result.packed.batches]
        print(f"\n[{run}] total {total:.2f} s: pandas/numpy {pandas_s:.2f} s "
              f"({100 * pandas_s / total:.0f} %), JAX {jax_s:.2f} s ({100 * jax_s / total:.0f} %)")
        print("  stages: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
        print(f"  batches {shapes}, slice block {result.packed.slice_block}; "
              f"new traces {new}")
        violated = report[report["violated"]]["relation"].value_counts()
        print(f"  rows out {len(rows):,}, report rows {len(report):,}, violated "
              f"{dict(violated[violated > 0])}")
    _accuracy(result, truth)
    _peers(board, truth, total, t, args.peer_slices)


def _accuracy(result, truth) -> None:
    slices = result.packed.slices[["underlying", "expiry"]].assign(
        forward=result.slice_forwards.forward, discount=result.slice_forwards.discount)
    merged = slices.merge(truth, on=["underlying", "expiry"], suffixes=("", "_true"))
    err_f = np.abs(merged["forward"] / merged["forward_true"] - 1)
    err_d = np.abs(merged["discount"] / merged["discount_true"] - 1)
    print(f"\nforward rel. error: median {np.median(err_f):.1e}, max {err_f.max():.1e}; "
          f"discount: median {np.median(err_d):.1e}, max {err_d.max():.1e}")


def _peers(board, truth, jax_total, timings, peer_slices) -> None:
    import pandas as pd
    import py_vollib_vectorized  # noqa: F401  (registers the vectorised functions)
    warnings.filterwarnings("ignore", module="py_vollib_vectorized")
    from py_vollib_vectorized import vectorized_implied_volatility_black

    n_rows = len(board)
    sample = board.iloc[: min(n_rows, 2 * 60 * peer_slices)]
    merged = sample.merge(truth, on=["underlying", "expiry"])
    rate = -np.log(merged["discount"]) / merged["expiry"]
    flag = np.where(merged["option_type"] == "C", "c", "p")
    start = time.perf_counter()
    for price in (merged["bid"], 0.5 * (merged["bid"] + merged["ask"]), merged["ask"]):
        vectorized_implied_volatility_black(price.to_numpy(), merged["forward"].to_numpy(),
                                            merged["strike"].to_numpy(), rate.to_numpy(),
                                            merged["expiry"].to_numpy(), flag, return_as="numpy")
    iv_peer = (time.perf_counter() - start) * n_rows / len(merged)

    wide = sample.pivot_table(index=["underlying", "expiry", "strike"], columns="option_type",
                              values=["bid", "ask"])
    wide.columns = [f"{price}_{side}" for price, side in wide.columns]
    wide = wide.reset_index()
    wide["parity"] = 0.5 * (wide["bid_C"] + wide["ask_C"] - wide["bid_P"] - wide["ask_P"])
    start = time.perf_counter()
    wide.groupby(["underlying", "expiry"]).apply(
        lambda s: pd.Series(np.polyfit(s["strike"], s["parity"], 1)), include_groups=False)
    n_slices = len(truth)
    fwd_peer = (time.perf_counter() - start) * n_slices / wide.groupby(
        ["underlying", "expiry"]).ngroups
    jax_iv_fwd = timings["jax_block"]
    print(f"\npeer (scaled from {len(merged):,} rows / "
          f"{wide.groupby(['underlying', 'expiry']).ngroups:,} slices):")
    print(f"  py_vollib_vectorized bid/mid/ask IVs: {iv_peer:.1f} s")
    print(f"  groupby-apply polyfit parity forwards (plain LS, no robustness): {fwd_peer:.1f} s")
    print(f"  peer IVs + forwards {iv_peer + fwd_peer:.1f} s vs jaxvol JAX block "
          f"(forwards + IVs + static arbitrage) {jax_iv_fwd:.1f} s: ratio "
          f"{(iv_peer + fwd_peer) / jax_iv_fwd:.1f}x; vs jaxvol whole pipeline "
          f"{jax_total:.1f} s: ratio {(iv_peer + fwd_peer) / jax_total:.1f}x")


if __name__ == "__main__":
    main()
