"""The kernel layer 4 data plane (`l4-dr`, `l4-nat`): nftables tables medlb owns.

The kernel forwards and medlb steers. `maglev` builds the lookup table, `jhash` is the
kernel's flow hash so medlb can say which bucket a flow lands in, `description` is the
plain model of what the kernel must do, `ruleset` renders it to nft commands (pure),
`listing` reads nft's JSON listings (pure) and `nft` is the only module that runs nft.
Nothing here may ever touch an nftables table whose name does not start with `medlb`.
"""
