"""HTML report of a nightly run: summary, stage timings, plots as embedded PNGs."""

from jaxvol.report.html import write_report

__all__ = ["write_report"]
