"""The one simulation engine: path blocks streamed through ``lax.scan`` over time steps.

A lane (one underlying / parameter set) simulates ``paths`` paths as ``n_blocks`` blocks of
``config.block`` paths. ``config.chunk`` blocks are simulated together (a chunk of
``chunk x block`` paths in memory); a ``lax.scan`` runs over the chunks and, inside, a
``lax.scan`` runs over the time steps carrying only the state and the observed values at the
observation steps (``observe_steps``), so memory is O(chunk x block x (state + observations))
whatever the number of paths.

Reproducibility (bitwise): block b of lane l draws its normals from
``keys.block_key(key, l, b)``; every per-path operation is elementwise; a block's per-path
statistics are reduced by a fixed pairwise tree inside the block (:func:`tree_sum`), and the
block sums are added in block order with Neumaier's compensated summation
(:func:`accumulate`). The chunk size therefore changes neither the bits drawn nor the order of
any addition, and the result is the same for any chunk size, device count or batch.

The reusable pieces (see :mod:`jaxvol.mc` for the overview):

- :class:`MCConfig`: paths, steps, block, chunk, antithetic (static, hashable);
- :func:`lane_sums`: one lane's per-path statistics summed over all its paths (the generic
  driver: a scheme supplies ``init``, ``step``, ``observe``, a payoff ``summarize``);
- :func:`lane_paths`: the same simulation returning the observed values of every path;
- :func:`tree_sum`, :func:`accumulate`: the fixed reductions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol.mc import keys as mc_keys

__all__ = ["MCConfig", "lane_sums", "lane_paths", "tree_sum", "accumulate", "observation_index"]


@dataclasses.dataclass(frozen=True)
class MCConfig:
    """Static size of one simulation.

    paths: paths per lane, rounded up to a multiple of ``block`` (:attr:`total_paths`).
    steps: time steps.
    block: paths per random-number block, a power of two >= 2; part of the definition of the
      result (another block size draws other numbers).
    chunk: blocks simulated at once (memory/speed only: results do not depend on it).
    antithetic: the second half of each block uses the negated normals of the first half.
    """

    paths: int
    steps: int
    block: int = 1024
    chunk: int = 16
    antithetic: bool = True

    def __post_init__(self):
        for name in ("paths", "steps", "block", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.block < 2 or self.block & (self.block - 1):
            raise ValueError(f"block must be a power of two >= 2, got {self.block!r}")

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.paths / self.block)

    @property
    def total_paths(self) -> int:
        return self.n_blocks * self.block

    @property
    def chunk_blocks(self) -> int:
        """Blocks per chunk (never more than the lane has)."""
        return min(self.chunk, self.n_blocks)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_blocks / self.chunk_blocks)


def tree_sum(x, axis: int = 0):
    """Sum over ``axis`` (length a power of two) by a fixed pairwise tree: the same additions
    in the same order whatever the other axes are."""
    x = jnp.moveaxis(x, axis, 0)
    n = x.shape[0]
    if n & (n - 1):
        raise ValueError(f"tree_sum needs a power-of-two length, got {n}")
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        x = x[:half] + x[half:]
    return x[0]


def accumulate(total, compensation, values):
    """Neumaier's compensated sum: add ``values`` (leading axis = blocks, in order) to the
    running (total, compensation) pair one block after another."""
    def add(carry, value):
        s, c = carry
        t = s + value
        c = c + jnp.where(jnp.abs(s) >= jnp.abs(value), (s - t) + value, (value - t) + s)
        return (t, c), None

    (total, compensation), _ = jax.lax.scan(add, (total, compensation), values)
    return total, compensation


def observation_index(steps: int, observe_steps) -> tuple[np.ndarray, np.ndarray]:
    """(row, flag) per step for recording observations after the listed (1-based) steps."""
    observe_steps = tuple(int(s) for s in observe_steps)
    if not observe_steps or any(not 1 <= s <= steps for s in observe_steps) or list(
            observe_steps) != sorted(set(observe_steps)):
        raise ValueError(f"observe_steps must be increasing step numbers in 1..{steps}, got "
                         f"{observe_steps!r}")
    row = np.zeros(steps, np.int32)
    flag = np.zeros(steps, bool)
    for j, s in enumerate(observe_steps):
        row[s - 1], flag[s - 1] = j, True
    return row, flag


def _chunk_keys(key, lane, chunk_index, config):
    blocks = chunk_index * config.chunk_blocks + jnp.arange(config.chunk_blocks,
                                                            dtype=jnp.int32)
    return jax.vmap(lambda b: mc_keys.block_key(key, lane, b))(blocks), blocks


def _simulate_chunk(block_keys, init, step, observe, observe_steps, noise, dtype, config):
    """One chunk: state and observations [chunk_blocks * block] after ``config.steps`` steps."""
    n = config.chunk_blocks * config.block
    rows, flags = observation_index(config.steps, observe_steps)
    state = init(n)
    template = observe(state)
    buffer = jax.tree.map(lambda a: jnp.zeros((len(observe_steps),) + a.shape, a.dtype),
                          template)

    def one_step(carry, inputs):
        state, buffer = carry
        i, row, flag = inputs
        keys_i = jax.vmap(lambda k: mc_keys.step_key(k, i))(block_keys)
        z = jax.vmap(lambda k: mc_keys.block_normals(k, config.block, noise, dtype,
                                                     config.antithetic))(keys_i)
        extra = jax.vmap(lambda k: jax.random.fold_in(k, mc_keys.EXTRA_STREAM))(keys_i)
        state = step(state, z.reshape(n, noise), extra, i)
        seen = observe(state)
        buffer = jax.tree.map(
            lambda buf, new: jax.lax.dynamic_update_index_in_dim(
                buf, jnp.where(flag, new, buf[row]), row, 0), buffer, seen)
        return (state, buffer), None

    inputs = (jnp.arange(config.steps, dtype=jnp.int32), jnp.asarray(rows), jnp.asarray(flags))
    (state, buffer), _ = jax.lax.scan(one_step, (state, buffer), inputs)
    return state, buffer


def lane_sums(key, lane, *, init: Callable, step: Callable, observe: Callable,
              summarize: Callable, observe_steps, noise: int, dtype, config: MCConfig):
    """Per-path statistics of one lane summed over all its paths (the generic driver).

    Args:
      key: the user's key; lane: this lane's integer id (its keys are fold_in(key, lane)...).
      init(n): the initial state, a PyTree of arrays with leading axis n (paths of the chunk).
      step(state, z, extra_keys, i): the state after step i (0-based, int32), given normals
        z[n, noise] (antithetic partners at j and j + block/2 within each block) and one key per
        block ``extra_keys[chunk_blocks]`` for any other draws the scheme makes.
      observe(state): a PyTree of [n] arrays recorded after each step in ``observe_steps``
        (1-based, increasing); the payoff sees them stacked as [len(observe_steps), n].
      summarize(observed, state, blocks): per-path statistics, a PyTree of arrays whose leading
        axes are [chunk_blocks, P] (P a power of two: the block's paths or antithetic pairs);
        ``blocks`` is the number of blocks of the chunk (see :mod:`jaxvol.mc.estimators`).
      noise: normals per path per step; dtype: float dtype of the simulation.

    Returns the PyTree of statistics summed over the lane's ``config.total_paths`` paths.
    """
    def one_chunk(carry, chunk_index):
        block_keys, blocks = _chunk_keys(key, lane, chunk_index, config)
        state, observed = _simulate_chunk(block_keys, init, step, observe, observe_steps,
                                          noise, dtype, config)
        stats = summarize(observed, state, config.chunk_blocks)
        per_block = jax.tree.map(lambda a: tree_sum(a, axis=1), stats)
        valid = blocks < config.n_blocks  # the last chunk may run past the lane's blocks
        per_block = jax.tree.map(
            lambda a: jnp.where(valid.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0.0), per_block)
        total, compensation = carry
        pairs = jax.tree.map(lambda t, c, v: accumulate(t, c, v), total, compensation, per_block)
        return (jax.tree.map(lambda p: p[0], pairs, is_leaf=_is_pair),
                jax.tree.map(lambda p: p[1], pairs, is_leaf=_is_pair)), None

    shapes = jax.eval_shape(lambda: _summary_shapes(init, step, observe, summarize,
                                                    observe_steps, noise, dtype, config))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape[2:], s.dtype), shapes)
    (total, compensation), _ = jax.lax.scan(
        one_chunk, (zeros, zeros), jnp.arange(config.n_chunks, dtype=jnp.int32))
    return jax.tree.map(jnp.add, total, compensation)


def _is_pair(x):
    return isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)


def _summary_shapes(init, step, observe, summarize, observe_steps, noise, dtype, config):
    block_keys, _ = _chunk_keys(jax.random.key(0), 0, 0, config)
    state, observed = _simulate_chunk(block_keys, init, step, observe, observe_steps, noise,
                                      dtype, config)
    return summarize(observed, state, config.chunk_blocks)


def lane_paths(key, lane, *, init: Callable, step: Callable, observe: Callable, observe_steps,
               noise: int, dtype, config: MCConfig):
    """The observed values of every path of one lane: a PyTree of [len(observe_steps),
    config.total_paths] arrays (path order: block by block), same random numbers as
    :func:`lane_sums`."""
    def one_chunk(_, chunk_index):
        block_keys, _ = _chunk_keys(key, lane, chunk_index, config)
        _, observed = _simulate_chunk(block_keys, init, step, observe, observe_steps, noise,
                                      dtype, config)
        return None, observed

    _, observed = jax.lax.scan(one_chunk, None, jnp.arange(config.n_chunks, dtype=jnp.int32))
    n = config.chunk_blocks * config.block
    return jax.tree.map(
        lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], config.n_chunks * n)[
            :, :config.total_paths], observed)
