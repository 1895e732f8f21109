"""The clustered pair (`ha:`): two medlb nodes behind VIPs that keepalived moves.

Groundwork only in this release: the config section validates and keepalived's
configuration renders (`keepalived`), but `medlb run` refuses a file with `ha:`.
docs/ha.md says what exists and what is planned.
"""
