"""medlb: a load balancer that understands hospital protocols."""

__version__ = "0.1.0"
