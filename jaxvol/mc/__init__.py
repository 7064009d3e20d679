"""Monte Carlo: the one simulation engine of jaxvol (Heston, general stochastic volatility,
local volatility reuses it).

User entry points
-----------------
- :func:`heston_paths`, :func:`heston_european`, :func:`heston_price` (any path payoff of
  :mod:`jaxvol.mc.payoffs`): Heston with schemes ``"qe_m"`` (Andersen 2008 QE-M, default),
  ``"qe_m_smooth"`` (differentiable switch, for greeks), ``"euler"`` (full truncation),
  ``"exact"`` (noncentral chi-square variance); see :mod:`jaxvol.mc.heston`.
- :func:`simulate` (general SV models :class:`SVModel`, ready-made :data:`HESTON`,
  :data:`THREE_HALVES`, :data:`GARCH`; schemes ``"euler"``, ``"milstein"``), see
  :mod:`jaxvol.mc.general`; :func:`jaxvol.heston.to_risk_neutral` / ``to_physical``.
- Results: :class:`MCResult` ``(price, stderr, stderr_plain, paths, status)``, one per lane and
  priced quantity; :class:`MCStatus` codes (``jaxvol.status``).

The reusable core (stable API for other simulations, e.g. :mod:`jaxvol.localvol`)
-------------------------------------------------------------------------------------
- Keys (:mod:`jaxvol.mc.keys`): ``block_key(key, lane, block) = fold_in(fold_in(key, lane),
  block)``; ``step_key(block_key, step)``; ``block_normals(key, block, noise, dtype,
  antithetic)``: normals [block, noise], antithetic partners at j and j + block/2.
- Driver (:mod:`jaxvol.mc.engine`): ``MCConfig(paths, steps, block=1024, chunk=16,
  antithetic=True)`` (static); ``lane_sums(key, lane, *, init, step, observe, summarize,
  observe_steps, noise, dtype, config)`` simulates one lane: ``init(n) -> state`` (PyTree of
  [n] arrays), ``step(state, z[n, noise], extra_keys[chunk_blocks], i) -> state`` under
  ``lax.scan`` over the steps, ``observe(state) -> PyTree of [n]`` recorded after the 1-based
  ``observe_steps``, ``summarize(observed[obs, n], state, blocks) -> PyTree of [blocks, P, ...]``
  per-path statistics (use ``estimators.path_statistics``), reduced by a fixed pairwise tree
  per block (``tree_sum``) and added block after block in block order (``accumulate``,
  compensated), so the chunk size never changes a bit. ``lane_paths(...)``: the same
  simulation returning every path's observations.
- Estimators (:mod:`jaxvol.mc.estimators`): ``path_statistics(values[n, k], controls[n, m] or
  None, blocks, antithetic)`` and ``estimate(sums, paths, antithetic, control_means=None,
  ok=None) -> MCResult`` (antithetic pairs, least-squares control variates, plain error).
- Batching (:mod:`jaxvol.mc.batch`): ``run_lanes(lane_fn, arrays, devices=None,
  cache_key=...)``: vmap over lanes, sharded over local devices with one single-device
  executable per device (``jaxvol.jobs.sharding.DeviceMap``) for 1 = 8 devices bitwise; plain
  jit/vmap under the caller's transformations.
- Payoffs (:mod:`jaxvol.mc.payoffs`): functions ``payoff(path, args) -> values[n, k]`` of the
  observed path dict (``spot``, ``variance`` [obs, n], ``times``, ``spot0``, ``v0``).

A new model writes its per-lane ``init``/``step``/``observe`` closures, calls ``lane_sums``
with ``summarize`` built from ``path_statistics``, then ``estimate``; and exposes a public
function through ``run_lanes`` (see ``jaxvol.mc.heston._european_lane`` as the example).
"""

from jaxvol.mc import batch, engine, estimators, keys, payoffs  # noqa: F401
from jaxvol.mc.engine import MCConfig
from jaxvol.mc.estimators import MCResult, MCStatus
from jaxvol.mc.general import GARCH, HESTON, THREE_HALVES, SVModel, simulate
from jaxvol.mc.heston import (SCHEMES, HestonPaths, heston_european, heston_paths,
                              heston_price)

__all__ = ["MCConfig", "MCResult", "MCStatus", "SCHEMES", "HestonPaths", "heston_european",
           "heston_paths", "heston_price", "SVModel", "HESTON", "THREE_HALVES", "GARCH",
           "simulate", "batch", "engine", "estimators", "keys", "payoffs"]
