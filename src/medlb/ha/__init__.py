"""The clustered pair (`ha:`): two medlb nodes behind VIPs that keepalived moves.

`node` finds which node this medlb is, `keepalived` renders keepalived's config,
`supervisor` runs and adopts keepalived and reads the roles it reports, and `alive`
is its track script (`medlb ha-alive`). Config and operator-decision sync between the
nodes are not there yet; docs/ha.md says what runs and what is planned.
"""
