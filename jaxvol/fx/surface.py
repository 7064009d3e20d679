"""An FX vol surface from per-tenor calibrated smiles: vol at any strike or delta and expiry.

Between tenors the total variance ``w = sigma^2 T`` is interpolated linearly in ``T`` at constant
normalised moneyness ``z = ln(K/F(T)) / sqrt(T)`` (so a smile's width scales with sqrt(T), as a
flat-delta smile does); before the first tenor and after the last the vol at the same ``z`` is
held constant. Forwards are interpolated as ``ln(F/S)`` linear in ``T`` (piecewise-constant
carry), from zero at ``T = 0``. Vol at a delta is the fixed point ``K = strike_from_delta(delta,
vol=sigma(K))``, iterated a fixed number of times from the ATM vol.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxvol.fx.conventions import parse_delta_type, strike_from_delta
from jaxvol.fx.strangle import SmileCalibration

__all__ = ["FXVolSurface"]

_DELTA_FIXED_POINT_ITERATIONS = 30  # contraction factor |d sigma/d ln K| * sqrt(T)-ish: ~0.1


class FXVolSurface(eqx.Module):
    """One pair's smiles across tenors (the calibration's single batch axis is the tenor axis).

    Build with :meth:`from_calibration`; tenors must be increasing and all fits OK (rows with a
    bad status make the surface NaN where they are used).
    """

    smiles: SmileCalibration
    spot: jax.Array
    expiries: jax.Array
    log_carry: jax.Array  # ln(F_i / S) per tenor

    @classmethod
    def from_calibration(cls, smiles: SmileCalibration, spot) -> "FXVolSurface":
        if smiles.forward.ndim != 1:
            raise ValueError(f"a surface needs a calibration over tenors only (1 batch axis), "
                             f"got batch shape {smiles.forward.shape}")
        spot = jnp.asarray(spot, smiles.forward.dtype)
        return cls(smiles, spot, smiles.expiry, jnp.log(smiles.forward / spot))

    def forward(self, expiry):
        """Forward at ``expiry`` (ln F/S linear in T through the tenors, zero at T=0)."""
        times = jnp.concatenate([jnp.zeros((1,), self.expiries.dtype), self.expiries])
        carry = jnp.concatenate([jnp.zeros((1,), self.log_carry.dtype), self.log_carry])
        slope_last = self.log_carry[-1] / self.expiries[-1]
        inside = jnp.interp(expiry, times, carry)
        return self.spot * jnp.exp(jnp.where(expiry > times[-1], slope_last * expiry, inside))

    def vol(self, strike, expiry):
        """Implied vol at ``strike`` and ``expiry`` (arrays broadcast together)."""
        return _surface_vol(self, strike, expiry)

    def _vol(self, strike, expiry):
        strike, expiry = jnp.broadcast_arrays(jnp.asarray(strike, self.spot.dtype),
                                              jnp.asarray(expiry, self.spot.dtype))
        flat = jax.vmap(self._vol_one)(strike.reshape(-1), expiry.reshape(-1))
        return flat.reshape(strike.shape)

    def _vol_one(self, strike, expiry):
        z = jnp.log(strike / self.forward(expiry)) / jnp.sqrt(expiry)
        tenor_strikes = jnp.exp(self.log_carry + z * jnp.sqrt(self.expiries)) * self.spot
        tenor_vols = self.smiles.vol(tenor_strikes[:, None])[:, 0]
        variance = tenor_vols**2 * self.expiries
        clamped = jnp.clip(expiry, self.expiries[0], self.expiries[-1])
        interpolated = jnp.interp(clamped, self.expiries, variance) / clamped
        return jnp.sqrt(interpolated)

    def vol_at_delta(self, delta, expiry, *, rd, rf, is_call, delta_type="spot"):
        """(strike, vol) whose smile delta is ``delta`` (rates continuous, to ``expiry``)."""
        return _surface_vol_at_delta(self, delta, expiry, rd, rf, is_call,
                                     parse_delta_type(delta_type))

    def _vol_at_delta(self, delta, expiry, rd, rf, is_call, delta_type):
        delta, expiry = jnp.broadcast_arrays(jnp.asarray(delta, self.spot.dtype),
                                             jnp.asarray(expiry, self.spot.dtype))
        atm = self._vol(self.forward(expiry), expiry)

        def step(_, vol):
            strike = strike_from_delta(delta, spot=self.spot, expiry=expiry, vol=vol, rd=rd, rf=rf,
                                       is_call=is_call, delta_type=delta_type).strike
            return self._vol(strike, expiry)

        vol = jax.lax.fori_loop(0, _DELTA_FIXED_POINT_ITERATIONS, step, atm)
        strike = strike_from_delta(delta, spot=self.spot, expiry=expiry, vol=vol, rd=rd, rf=rf,
                                   is_call=is_call, delta_type=delta_type).strike
        return strike, vol


_surface_vol = eqx.filter_jit(FXVolSurface._vol)
_surface_vol_at_delta = eqx.filter_jit(FXVolSurface._vol_at_delta)
