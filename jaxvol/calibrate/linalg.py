"""The small dense solves of the calibration engine, in one place.

Dense symmetric positive-definite solves unrolled for a static size (:func:`cholesky_solve`,
one matrix per lane under ``vmap``), and the 2 x 2 / 3 x 3 Cholesky factor, forward and
backward substitutions written elementwise over lanes (each entry a [lanes, 1] column) for the
variable-projection fits.

Batched LAPACK calls on thousands of 3x3 or 5x5 matrices are slow on CPU; an unrolled Cholesky
written as scalar jnp operations becomes a handful of elementwise kernels across the lanes under
``vmap``. A non-positive pivot yields NaN (the caller treats it as a failed step).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["backward2", "backward3", "cholesky2", "cholesky3", "cholesky_solve", "forward2",
           "forward3"]


def cholesky_solve(matrix, rhs):
    """Solve matrix @ x = rhs for one SPD matrix [n, n] (n static, small) and rhs [n]."""
    n = matrix.shape[-1]
    lower = [[None] * n for _ in range(n)]
    for j in range(n):
        diagonal = matrix[j, j] - sum(lower[j][p] * lower[j][p] for p in range(j))
        root = jnp.sqrt(jnp.where(diagonal > 0, diagonal, jnp.nan))
        lower[j][j] = root
        for i in range(j + 1, n):
            lower[i][j] = (matrix[i, j] - sum(lower[i][p] * lower[j][p] for p in range(j))) / root
    forward = [None] * n
    for i in range(n):
        forward[i] = (rhs[i] - sum(lower[i][p] * forward[p] for p in range(i))) / lower[i][i]
    solution = [None] * n
    for i in reversed(range(n)):
        solution[i] = (forward[i] - sum(lower[p][i] * solution[p] for p in range(i + 1, n))
                       ) / lower[i][i]
    return jnp.stack(solution)


def cholesky3(n00, n01, n02, n11, n12, n22):
    """Unrolled Cholesky factor of a symmetric 3 x 3 matrix given by its upper triangle
    (elementwise over lanes); NaN where not positive definite."""
    sqrt = lambda v: jnp.sqrt(jnp.where(v > 0, v, jnp.nan))  # noqa: E731
    l00 = sqrt(n00)
    l10, l20 = n01 / l00, n02 / l00
    l11 = sqrt(n11 - l10 * l10)
    l21 = (n12 - l20 * l10) / l11
    l22 = sqrt(n22 - l20 * l20 - l21 * l21)
    return l00, l10, l20, l11, l21, l22


def forward3(factor, b0, b1, b2):
    l00, l10, l20, l11, l21, l22 = factor
    x0 = b0 / l00
    x1 = (b1 - l10 * x0) / l11
    return x0, x1, (b2 - l20 * x0 - l21 * x1) / l22


def backward3(factor, x0, x1, x2):
    l00, l10, l20, l11, l21, l22 = factor
    u2 = x2 / l22
    u1 = (x1 - l21 * u2) / l11
    return (x0 - l10 * u1 - l20 * u2) / l00, u1, u2


def cholesky2(n00, n01, n11):
    sqrt = lambda v: jnp.sqrt(jnp.where(v > 0, v, jnp.nan))  # noqa: E731
    l00 = sqrt(n00)
    l10 = n01 / l00
    return l00, l10, sqrt(n11 - l10 * l10)


def forward2(factor, b0, b1):
    l00, l10, l11 = factor
    x0 = b0 / l00
    return x0, (b1 - l10 * x0) / l11


def backward2(factor, x0, x1):
    l00, l10, l11 = factor
    u1 = x1 / l11
    return (x0 - l10 * u1) / l00, u1
