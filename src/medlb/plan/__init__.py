"""`medlb plan FILE`: sizing for an imaging site (docs/sizing.md).

inputs.py reads the site, sizing.py does the arithmetic (no I/O), rates.py finds
medlb's measured rates, report.py prints the tables, command.py is the command line.
"""

from medlb.plan.inputs import PlanError, Site, load_site
from medlb.plan.sizing import MeasuredRates, Plan, compute

__all__ = ["MeasuredRates", "Plan", "PlanError", "Site", "compute", "load_site"]
