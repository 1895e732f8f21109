"""The clustered pair (`ha:`): two medlb nodes behind VIPs that keepalived moves.

`node` finds which node this medlb is, `keepalived` renders keepalived's config,
`supervisor` runs and adopts keepalived and reads the roles it reports, and `alive`
is its track script (`medlb ha-alive`). `channel` is the nodes' sync channel (the
sync token, the pinned peer certificate, the peer watcher), `generation` which config
a node runs, and `configsync` makes config changes on both nodes or neither.
Operator-decision sync is not there yet; docs/ha.md says what runs and what is planned.
"""
