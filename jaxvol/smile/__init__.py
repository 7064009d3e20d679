"""Smile models: raw SVI (svi), SSVI surfaces (ssvi) and SABR (sabr)."""

from jaxvol.smile import sabr, svi  # noqa: F401

__all__ = ["sabr", "svi"]
