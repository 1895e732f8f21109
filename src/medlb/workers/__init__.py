"""`workers: N`: one control process and N data-plane processes (see supervisor.py)."""

from medlb.workers.supervisor import Workers

__all__ = ["Workers"]
