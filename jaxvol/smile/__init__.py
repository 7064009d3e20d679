"""Smile models: raw SVI (svi), SSVI surfaces (ssvi) and SABR (sabr)."""

from jaxvol.smile import sabr, ssvi, svi  # noqa: F401

__all__ = ["sabr", "ssvi", "svi"]
