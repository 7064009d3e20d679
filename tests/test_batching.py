"""The batching edge (jaxvol.batching): one bucket table, one padding rule, blocked jit with a
trace counter, and the process-wide trace guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvol import batching
from jaxvol.calibrate import map_chunks
from jaxvol.chains import strike_capacity
from jaxvol.jobs import slices


def test_one_bucket_table_for_chains_and_the_job():
    counts = [1, 8, 9, 17, 33, 49, 65, 97, 129, 180, 193, 257, 385, 512, 513, 1100]
    expected = [8, 8, 16, 32, 48, 64, 96, 128, 192, 192, 256, 384, 512, 512, 1024, 1536]
    assert [batching.strike_bucket(c) for c in counts] == expected
    np.testing.assert_array_equal(strike_capacity(counts), expected)  # chains' default table
    assert slices.strike_bucket is batching.strike_bucket             # the job's packing
    with pytest.raises(ValueError, match="positive"):
        batching.strike_buckets([3], (0, 8))


def test_sizes_and_the_padding_rule():
    assert [batching.power_of_two(n) for n in (0, 1, 2, 3, 8, 9)] == [1, 1, 2, 4, 8, 16]
    assert batching.power_of_two(3, minimum=8) == 8
    assert [batching.padded_size(n, 4, 2) for n in (0, 1, 8, 9)] == [8, 8, 8, 16]
    x = np.arange(6.0).reshape(3, 2)
    padded = batching.pad_leading(x, 5)
    np.testing.assert_array_equal(padded, [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])
    assert isinstance(padded, np.ndarray)
    np.testing.assert_array_equal(batching.pad_leading(x, 4, np.nan)[3], [np.nan, np.nan])
    assert isinstance(batching.pad_leading(jnp.asarray(x), 4), jax.Array)
    assert batching.pad_leading(x, 2) is x  # never truncates


def test_run_blocks_traces_once_per_shape_and_drops_the_padding():
    calls = []

    def kernel(a, b):
        calls.append(a.shape)
        return {"sum": a.sum(axis=1) * b, "same": a}

    name = "test-kernel"
    before = batching.TRACE_COUNTS[name]
    rng = np.random.default_rng(0)
    for lanes in (3, 8, 13):  # 1, 1 and 2 blocks of 8 lanes: one shape
        a, b = rng.normal(size=(lanes, 5)), rng.normal(size=lanes)
        out = batching.run_blocks(kernel, [a, b], 8, name=name, settings={"v": 1})
        np.testing.assert_allclose(out["sum"], a.sum(axis=1) * b, rtol=1e-14)
        np.testing.assert_array_equal(out["same"], a)
        assert out["sum"].shape == (lanes,)
    assert batching.TRACE_COUNTS[name] - before == 1
    assert calls == [(8, 5)]
    with pytest.raises(ValueError, match="lanes"):
        batching.run_blocks(kernel, [np.zeros((3, 5)), np.zeros(4)], 8)


def test_run_blocks_over_a_mesh_matches_one_device():
    """Eight devices (the test session's) vs one: bitwise the same, one trace for both."""
    mesh = batching.local_mesh(0)
    assert mesh.size == 8
    x = np.random.default_rng(1).normal(size=(21, 4))
    name = "test-mesh"
    fn = lambda v: jnp.cumsum(jnp.exp(jnp.sin(v)) * v, axis=1)  # noqa: E731
    before = batching.TRACE_COUNTS[name]
    eight = batching.run_blocks(fn, [x], 2, mesh=mesh, name=name)
    one = batching.run_blocks(fn, [x], 2, mesh=batching.local_mesh(1), name=name)
    np.testing.assert_array_equal(eight, one)
    np.testing.assert_allclose(eight, np.cumsum(np.exp(np.sin(x)) * x, axis=1), rtol=1e-13)
    assert batching.TRACE_COUNTS[name] - before == 1  # one DeviceMap, one local shape [2, 4]


def test_map_blocks_matches_the_whole_batch():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(10, 3)))
    fn = lambda v: (v ** 2).sum(axis=1)  # noqa: E731
    whole = fn(x)
    np.testing.assert_allclose(batching.map_blocks(fn, 4, x), whole, rtol=1e-15)
    np.testing.assert_allclose(map_chunks(fn, 4, x), whole, rtol=1e-15)  # calibrate's name
    assert batching.map_blocks(fn, None, x).shape == (10,)
    with pytest.raises(ValueError, match="chunk_size"):
        map_chunks(fn, 0, x)


def test_count_traces_sees_every_jax_trace():
    f = jax.jit(lambda v: v * 3.0 + 1.0)
    with batching.count_traces() as traces:
        f(np.ones(7))
        f(np.ones(7))  # cached: no second trace
    assert sum(traces.values()) == 1
    with batching.count_traces() as again:
        f(np.ones(7))
    assert not again
    with batching.count_traces() as other:
        f(np.ones(9))  # a new shape traces
    assert sum(other.values()) == 1
