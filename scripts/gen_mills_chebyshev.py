"""Generate the Chebyshev coefficients of a(z) = 1 - z*R(z) (R the Mills ratio) on [3, 4*sqrt(2)].

jaxvol.special.mills_complement uses them where neither the direct form (cancellation) nor
Cody's large-argument form applies. Run: python scripts/gen_mills_chebyshev.py [degree]
"""

import sys

import mpmath as mp

mp.mp.dps = 50
LO, HI = mp.mpf(3), 4 * mp.sqrt(2)


def a_of_z(z):
    return 1 - z * mp.ncdf(-z) / mp.npdf(z)


def target(u):  # u in [-1, 1]
    z = (HI + LO) / 2 + (HI - LO) / 2 * u
    return a_of_z(z) * z * z


def chebyshev(degree):
    n = degree + 1
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n) for k in range(n)]
    values = [target(u) for u in nodes]
    coefs = []
    for j in range(n):
        c = 2 * mp.fsum(values[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / n) for k in range(n)) / n
        coefs.append(c)
    coefs[0] /= 2
    return coefs


if __name__ == "__main__":
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    coefs = chebyshev(degree)
    print("_MILLS_CHEB = (")
    for c in coefs:
        print(f"    {mp.nstr(c, 20)},")
    print(")")
    print("# last coefficients:", [mp.nstr(abs(c), 3) for c in coefs[-4:]], file=sys.stderr)
