"""The compiled public edge: ``@edge`` jits a public array function where users call it.

Called directly (outside any ``jax.jit``), a JAX function written with ``jax.numpy`` runs op by
op: every primitive is dispatched (and on first use compiled) separately, which on 1e6 lanes
made ``black_price`` 10x slower than the same function under ``jax.jit``. ``edge`` wraps the
function in ``jax.jit`` so that a direct call runs ONE compiled program per input shape, dtype
and static configuration, and inside a user's ``jit``/``vmap``/``grad`` it is simply inlined
(a nested jit is transparent to transformations).

* Static configuration (strings such as ``method="obloj"``, node counts, frozen config
  dataclasses) is named in ``static=`` and becomes part of the cache key.
* Python scalars stay traced and weakly typed (``expiry=0.5`` then ``expiry=0.25`` reuse one
  program; a Python float never forces float64 on float32 arrays).
* Lists and tuples of numbers are converted to numpy arrays on the host first (``jit`` would
  otherwise see a pytree of scalars and retrace per length).

The wrapper keeps the function's name, signature and docstring (``functools.wraps``) and
exposes ``lower``/``trace`` and the undecorated function as ``__wrapped__``.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["blockwise", "edge"]


def _host_array(value):
    """Lists/tuples of numbers -> numpy arrays; everything else unchanged."""
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return np.asarray(value)
    return value


def edge(fn=None, *, static=()):
    """Decorator: compile ``fn`` at the public edge (``jax.jit`` with static argument names).

    ``static`` names the arguments that are configuration (hashable Python values). Usable as
    ``@edge`` or ``@edge(static=("method",))``.
    """
    if fn is None:
        return functools.partial(edge, static=static)
    static = (static,) if isinstance(static, str) else tuple(static)
    signature = inspect.signature(fn)
    unknown = [name for name in static if name not in signature.parameters]
    if unknown:
        raise TypeError(f"edge: {fn.__qualname__} has no argument(s) {unknown}")
    jitted = jax.jit(fn, static_argnames=static)
    names = list(signature.parameters)
    static_positions = {i for i, name in enumerate(names) if name in static}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [a if i in static_positions else _host_array(a) for i, a in enumerate(args)]
        kwargs = {k: (v if k in static else _host_array(v)) for k, v in kwargs.items()}
        return jitted(*args, **kwargs)

    wrapper.lower = jitted.lower
    wrapper.trace = jitted.trace
    wrapper.jitted = jitted
    return wrapper


CPU_BLOCK = 2048  # lanes per block: a long elementwise chain's intermediates stay in L1/L2


def blockwise(kernel, *arrays, block=CPU_BLOCK):
    """``kernel(*arrays)`` for an elementwise kernel, run over blocks of ``block`` lanes on CPU.

    XLA's CPU fusion does not fuse a long elementwise chain into one loop: an expensive value
    with several consumers (a division, an exponential) is written out as a full-size array
    and read back, so a 1e6-lane kernel streams dozens of 8 MB intermediates through memory.
    Over blocks of 2,048 lanes (a ``fori_loop`` of ``dynamic_slice`` / ``dynamic_update_slice``
    on the flattened inputs: no padding copies; the last block is shifted back to end at the
    last lane, so some lanes are computed twice with identical values) they stay in cache:
    measured 25-35% less CPU time on the Black kernels. 0-d inputs are passed to every block
    as they are; the other inputs are broadcast to one shape. Batches of at most one block,
    and any backend but the CPU, run the kernel once on the whole batch. Values are identical
    either way.
    """
    shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))
    size = int(np.prod(shape)) if shape else 1
    if jax.default_backend() != "cpu" or size <= block:
        return kernel(*arrays)
    flat = [a if jnp.ndim(a) == 0 else jnp.broadcast_to(a, shape).reshape(-1) for a in arrays]

    def lanes(start):
        return [a if jnp.ndim(a) == 0 else jax.lax.dynamic_slice(a, (start,), (block,))
                for a in flat]

    blocks = -(-size // block)
    out_type = jax.eval_shape(kernel, *lanes(0))
    out = jax.tree_util.tree_map(lambda o: jnp.zeros((size,), o.dtype), out_type)

    def body(i, out):
        start = jnp.minimum(i * block, size - block)
        values = kernel(*lanes(start))
        return jax.tree_util.tree_map(
            lambda o, v: jax.lax.dynamic_update_slice(o, v, (start,)), out, values)

    out = jax.lax.fori_loop(0, blocks, body, out)
    return jax.tree_util.tree_map(lambda o: o.reshape(shape), out)
