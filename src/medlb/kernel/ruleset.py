"""Render the layer 4 description to nft commands: full apply, element update, teardown.

Pure text out, one `nft -f -` transaction each (nftlb's single-buffer approach). Only
two tables are ever named, `netdev medlb_dr` and `ip medlb_nat`; every other name is
built from a fixed prefix plus a service, server or interface name checked against a
strict pattern, so nothing from the config can change what a command means.

The forms are those that load and list with Debian 12's nft 1.0.6 (the shared L4
reference, and tests/netns): maps of `type mark : ...` filled from `meta mark` or
`ct mark`, never `typeof jhash ...`, whose listing segfaults nft 1.0.6.

How a flow finds its server
- DR (netdev ingress, no conntrack): a pin (the flow's 4-tuple -> server mark) if the
  flow has one and its server still has a MAC; otherwise the Maglev table through
  `jhash ip saddr . tcp sport mod SIZE seed SEED`, and the choice is pinned. A SYN
  first deletes its 4-tuple's pin, so a new connection that reuses a client port
  follows the table, not an old connection's pin. Pins are refreshed by every packet and expire after
  `pin_timeout` of silence. If the pin map is full, flows are forwarded unpinned.
- NAT (conntrack): the first packet of a connection is hashed the same way, the server
  mark goes into `ct mark` and the packet is DNATed; conntrack keeps every later packet
  on that server, whatever the maps become. `source_nat` servers' marks are in a set
  that postrouting masquerades.
- No server for a new flow: counted in `no_server_<service>` and dropped.

Full apply: chains and maps are created if missing, emptied and refilled; pin maps and
counters are created if missing and never emptied, so a restart that adopts the tables
keeps established flows and counts. Objects that a reload removed (named in the
listing of what is present) are deleted in the same transaction.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medlb.config.models import INTERFACE_PATTERN
from medlb.kernel.description import L4Ruleset, L4Server, L4Service
from medlb.kernel.listing import TableObjects

DR_TABLE = ("netdev", "medlb_dr")
NAT_TABLE = ("ip", "medlb_nat")
TABLES = (DR_TABLE, NAT_TABLE)

#: Service and server names as the config allows them (config.models.Name).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: Interface names that are also valid nft identifiers (Linux allows at most 15 bytes):
#: the pattern the config validates `l4.interface` with.
_INTERFACE = re.compile(INTERFACE_PATTERN)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
#: Elements per line in a rendered map: keeps fixtures and `nft -f` errors readable.
_PER_LINE = 8
_NEW_FLOW = "tcp flags & (syn | ack) == syn"


class RulesetError(ValueError):
    """The description cannot be rendered; the message says which service and why."""


class StructureChanged(Exception):
    """An element-level update cannot express this change: render a full apply."""


# --- names ---------------------------------------------------------------------------


def chain_name(service: str) -> str:
    return f"svc_{service}"


def ingress_chain(interface: str) -> str:
    return f"ingress_{interface}"


def slots_map(service: str) -> str:
    return f"slots_{service}"


def macs_map(service: str) -> str:
    return f"macs_{service}"


def targets_map(service: L4Service) -> str:
    """NAT address map; its type (with or without a port) is in the name, so a change
    of type is a new map and the old one is deleted rather than refused."""
    with_ports = any(server.port is not None for server in service.servers)
    return f"{'targetports' if with_ports else 'targets'}_{service.name}"


def pins_map(service: L4Service) -> str:
    return f"{'pins' if service.hash_key == 'flow' else 'clientpins'}_{service.name}"


def traffic_map(service: str) -> str:
    return f"traffic_{service}"


def new_flows_map(service: str) -> str:
    return f"new_{service}"


def traffic_counter(service: str, server: str) -> str:
    """Packets and bytes from clients to a server (the connections' original direction)."""
    return f"traffic_{service}/{server}"


def replies_map(service: str) -> str:
    return f"replies_{service}"


def replies_counter(service: str, server: str) -> str:
    """NAT: packets and bytes from a server back to its clients (DR's replies never
    cross the balancer)."""
    return f"replies_{service}/{server}"


def new_flows_counter(service: str, server: str) -> str:
    return f"new_{service}/{server}"


def no_server_counter(service: str) -> str:
    return f"no_server_{service}"


SOURCE_NAT_SET = "source_nat"


# --- small renderers -----------------------------------------------------------------


def nft_time(seconds: float) -> str:
    """Seconds in nft's notation: 7200 -> 2h, 5405 -> 1h30m5s, 0.5 -> 500ms."""
    milliseconds = round(seconds * 1000)
    if milliseconds <= 0:
        raise RulesetError(f"a timeout must be positive, not {seconds}")
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _ports(ports: Sequence[tuple[int, int]]) -> str:
    items = [str(first) if first == last else f"{first}-{last}" for first, last in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _mark(mark: int) -> str:
    return f"0x{mark:08x}"


def _elements(pairs: Iterable[tuple[str, str]] | Iterable[str]) -> str:
    """`{ k : v, ... }` (or `{ k, ... }`), _PER_LINE to a line."""
    rendered = [f"{item[0]} : {item[1]}" if isinstance(item, tuple) else item for item in pairs]
    lines = [", ".join(rendered[start:start + _PER_LINE]) for start in range(0, len(rendered), _PER_LINE)]
    return "{ " + ",\n    ".join(lines) + " }"


@dataclass
class _Batch:
    """One table's commands, grouped by the order a single transaction needs."""

    family: str
    table: str

    def __post_init__(self) -> None:
        self.chains: list[str] = []       # add + flush: rendered chains
        self.maps: list[str] = []         # add + flush: maps refilled on every apply
        self.kept: list[str] = []         # add only: pins, counters
        self.elements: list[str] = []
        self.rules: list[str] = []
        self.names: dict[str, set[str]] = {"chain": set(), "map": set(), "set": set(), "counter": set()}

    @property
    def spec(self) -> str:
        return f"{self.family} {self.table}"

    def chain(self, name: str, hook: str | None = None) -> None:
        self.names["chain"].add(name)
        body = f" {{ {hook}; policy accept; }}" if hook else ""
        self.chains += [f"add chain {self.spec} {name}{body}", f"flush chain {self.spec} {name}"]

    def refilled(self, kind: str, name: str, definition: str, elements: list) -> None:
        self.names[kind].add(name)
        self.maps += [f"add {kind} {self.spec} {name} {{ {definition}; }}", f"flush {kind} {self.spec} {name}"]
        if elements:
            self.elements.append(f"add element {self.spec} {name} {_elements(elements)}")

    def counter(self, name: str) -> None:
        self.names["counter"].add(name)
        self.kept.append(f"add counter {self.spec} {name}")

    def rule(self, chain: str, text: str, why: str = "") -> None:
        """A rule; `why` becomes a comment line above it, for the person reading nft -f."""
        self.rules += [f"# {why}"] if why else []
        self.rules.append(f"add rule {self.spec} {chain} {text}")

    def render(self, present: TableObjects | None) -> list[str]:
        stale: dict[str, set[str]] = {kind: set() for kind in self.names}
        if present is not None:
            stale = {"chain": set(present.chains) - self.names["chain"],
                     "map": set(present.maps) - self.names["map"],
                     "set": set(present.sets) - self.names["set"],
                     "counter": set(present.counters) - self.names["counter"]}
        commands = [f"add table {self.spec}", *self.chains]
        # Rules and map elements may refer to stale objects: empty those first.
        commands += [f"flush chain {self.spec} {name}" for name in sorted(stale["chain"])]
        commands += self.maps
        for kind in ("chain", "map", "set", "counter"):
            commands += [f"delete {kind} {self.spec} {name}" for name in sorted(stale[kind])]
        return commands + self.kept + self.elements + self.rules


# --- checks ----------------------------------------------------------------------------


def _check_service(service: L4Service) -> None:
    where = f"service {service.name!r}"
    if not _NAME.match(service.name):
        raise RulesetError(f"{where}: the name cannot be used in nftables")
    if not _INTERFACE.match(service.interface):
        raise RulesetError(f"{where}: {service.interface!r} is not an interface name nftables accepts")
    if not service.listens:
        raise RulesetError(f"{where}: no VIP to listen on")
    for listen in service.listens:
        if not isinstance(listen.address, ipaddress.IPv4Address):
            raise RulesetError(f"{where}: {listen.address} is not an IPv4 address (IPv4 only in this release)")
        for first, last in listen.ports:
            if not 1 <= first <= last <= 65535:
                raise RulesetError(f"{where}: port range {first}-{last} is not valid")
    names = [server.name for server in service.servers]
    if len(set(names)) != len(names):
        raise RulesetError(f"{where}: two servers have the same name")
    for server in service.servers:
        if not _NAME.match(server.name):
            raise RulesetError(f"{where}: server name {server.name!r} cannot be used in nftables")
        if not 0 < server.mark < 2**32:
            raise RulesetError(f"{where}: server {server.name!r} has no valid mark")
        if server.mac is not None and not _MAC.match(server.mac):
            raise RulesetError(f"{where}: server {server.name!r} has a MAC nftables cannot read: {server.mac!r}")
    if service.mode == "nat" and len({server.port is None for server in service.servers}) > 1:
        raise RulesetError(f"{where}: either every server has a port or none has (the kernel keeps one "
                               "address map per service)")
    table = service.table
    for name in table.servers:
        try:
            server = service.server(name)
        except KeyError:
            raise RulesetError(f"{where}: the Maglev table names {name!r}, which is not one of its servers") from None
        if not server.forwarding:
            raise RulesetError(f"{where}: server {name!r} takes new flows but does not forward")
        if service.mode == "dr" and server.mac is None:
            raise RulesetError(f"{where}: server {name!r} takes new flows but its MAC is unknown")


def _check_shared(services: Sequence[L4Service]) -> None:
    """Names, marks and VIP ports that services of one table must not share."""
    seen_names: set[str] = set()
    marks: dict[int, str] = {}
    claimed: list[tuple[ipaddress.IPv4Address, int, int, str]] = []
    for service in services:
        if service.name in seen_names:
            raise RulesetError(f"two services are named {service.name!r}")
        seen_names.add(service.name)
        for server in service.servers:
            owner = marks.setdefault(server.mark, f"{service.name}/{server.name}")
            if owner != f"{service.name}/{server.name}":
                raise RulesetError(f"servers {owner} and {service.name}/{server.name} have the same mark "
                                   f"{_mark(server.mark)}; rename one of them")
        for listen in service.listens:
            for first, last in listen.ports:
                for address, other_first, other_last, other in claimed:
                    if address == listen.address and first <= other_last and other_first <= last:
                        raise RulesetError(f"services {other!r} and {service.name!r} both listen on "
                                           f"{address} port {max(first, other_first)}")
                claimed.append((listen.address, first, last, service.name))


# --- the tables ------------------------------------------------------------------------


def _hash_key(service: L4Service) -> str:
    return "ip saddr . tcp sport" if service.hash_key == "flow" else "ip saddr"


def _pin_key(service: L4Service) -> tuple[str, str]:
    """(the pin map's key expression, its type). A flow's pin names the whole 4-tuple:
    Linux may give one client port to two connections towards two VIP ports."""
    if service.hash_key == "flow":
        return "ip saddr . tcp sport . ip daddr . tcp dport", "ipv4_addr . inet_service . ipv4_addr . inet_service"
    return "ip saddr", "ipv4_addr"


def _jhash(service: L4Service) -> str:
    return f"jhash {_hash_key(service)} mod {service.table.size} seed {_mark(service.table.seed)}"


def _slot_elements(service: L4Service) -> list[tuple[str, str]]:
    marks = {server.name: _mark(server.mark) for server in service.servers}
    return [(str(bucket), marks[name]) for bucket, name in enumerate(service.table.assignment())
            if name is not None]


def _counters(batch: _Batch, service: L4Service) -> None:
    """Per-server traffic and new-flow counters (NAT: replies too), and the maps rules
    reach them by."""
    kinds = [(traffic_map(service.name), traffic_counter), (new_flows_map(service.name), new_flows_counter)]
    if service.mode == "nat":
        kinds.append((replies_map(service.name), replies_counter))
    for server in service.servers:
        for _, counter in kinds:
            batch.counter(counter(service.name, server.name))
    batch.counter(no_server_counter(service.name))
    for map_name, counter in kinds:
        batch.refilled("map", map_name, "type mark : counter",
                       [(_mark(server.mark), f'"{counter(service.name, server.name)}"') for server in service.servers])


def _mac_elements(service: L4Service) -> list[tuple[str, str]]:
    return [(_mark(server.mark), server.mac) for server in service.servers
            if server.forwarding and server.mac is not None]


def _dr_service(batch: _Batch, service: L4Service, balancer_mac: str) -> None:
    name = service.name
    key, pin_type = _pin_key(service)
    chain = chain_name(name)
    pins = pins_map(service)
    batch.chain(chain)
    batch.refilled("map", slots_map(name), "type mark : mark", _slot_elements(service))
    batch.refilled("map", macs_map(name), "type mark : ether_addr", _mac_elements(service))
    _counters(batch, service)
    batch.names["map"].add(pins)
    timeout = nft_time(service.pin_timeout)
    batch.kept.append(f"add map {batch.spec} {pins} {{ type {pin_type} : mark; size {service.pin_capacity}; "
                      f"timeout {timeout}; flags dynamic,timeout; }}")

    send = (f"ether daddr set meta mark map @{macs_map(name)} ether saddr set {balancer_mac}")
    pin = f"update @{pins} {{ {key} timeout {timeout} : meta mark }}"
    count = f"counter name meta mark map @{traffic_map(name)}"
    count_new = f"counter name meta mark map @{new_flows_map(name)}"
    forward = f'fwd to "{service.interface}"'
    from_pin = f"meta mark set {key} map @{pins}"
    from_table = f"meta mark set {_jhash(service)} meta mark set meta mark map @{slots_map(name)}"
    if service.hash_key == "flow":
        batch.rule(chain, f"{_NEW_FLOW} delete @{pins} {{ {key} : meta mark }}",
                   f"{name}: a new connection on a reused client port does not follow an old pin")
    else:
        batch.rule(chain, f"{_NEW_FLOW} {from_pin} {send} {pin} {count_new} {count} {forward}",
                   f"{name}: a pinned client's new connection (client pins are persistence)")
    batch.rule(chain, f"{from_pin} {send} {pin} {count} {forward}",
               f"{name}: a pinned flow whose server still forwards")
    batch.rule(chain, f"{_NEW_FLOW} {from_table} {send} {pin} {count_new} {count} {forward}",
               f"{name}: a new flow: the Maglev table's server for its bucket, pinned")
    batch.rule(chain, f"{from_table} {send} {pin} {count} {forward}")
    batch.rule(chain, f"{from_table} {send} {count} {forward}", f"{name}: the pin map is full: unpinned")
    batch.rule(chain, f'counter name "{no_server_counter(name)}" drop', f"{name}: no server takes new flows")


def _dr_table(services: Sequence[L4Service], ruleset: L4Ruleset) -> _Batch:
    batch = _Batch(*DR_TABLE)
    interfaces = sorted({service.interface for service in services})
    for interface in interfaces:
        chain = ingress_chain(interface)
        batch.chain(chain, f'type filter hook ingress device "{interface}" priority 0')
    for service in services:
        try:
            balancer_mac = ruleset.interface_mac(service.interface)
        except KeyError:
            raise RulesetError(f"service {service.name!r}: the balancer's MAC on {service.interface!r} "
                               "is unknown") from None
        if not _MAC.match(balancer_mac):
            raise RulesetError(f"interface {service.interface!r}: MAC {balancer_mac!r} is not valid")
        _dr_service(batch, service, balancer_mac)
        for listen in service.listens:
            batch.rule(ingress_chain(service.interface),
                       f"meta pkttype host ip daddr {listen.address} tcp dport {_ports(listen.ports)} "
                       f"goto {chain_name(service.name)}",
                       "only frames sent to this node's MAC: a passive node never forwards flooded ones")
    return batch


def _nat_service(batch: _Batch, service: L4Service) -> None:
    name = service.name
    chain = chain_name(name)
    batch.chain(chain)
    batch.refilled("map", slots_map(name), "type mark : mark", _slot_elements(service))
    targets = targets_map(service)
    if targets.startswith("targetports"):
        batch.refilled("map", targets, "type mark : ipv4_addr . inet_service",
                       [(_mark(server.mark), f"{server.address} . {server.port}") for server in service.servers])
        dnat = f"dnat ip addr . port to ct mark map @{targets}"
    else:
        batch.refilled("map", targets, "type mark : ipv4_addr",
                       [(_mark(server.mark), str(server.address)) for server in service.servers])
        dnat = f"dnat to ct mark map @{targets}"
    _counters(batch, service)
    batch.rule(chain, f"ct mark set {_jhash(service)} ct mark set ct mark map @{slots_map(name)} "
                      f"counter name ct mark map @{new_flows_map(name)} {dnat}",
               f"{name}: a new connection: the Maglev table's server, kept in ct mark; conntrack does the rest")
    batch.rule(chain, f'counter name "{no_server_counter(name)}" drop', f"{name}: no server takes new flows")
    batch.rule("forward", f"ct direction original counter name ct mark map @{traffic_map(name)}")
    batch.rule("forward", f"ct direction reply counter name ct mark map @{replies_map(name)}")


def _nat_table(services: Sequence[L4Service]) -> _Batch:
    batch = _Batch(*NAT_TABLE)
    # Only a connection's first packet traverses the nat chains; conntrack does the rest.
    batch.chain("prerouting", "type nat hook prerouting priority dstnat")
    batch.chain("postrouting", "type nat hook postrouting priority srcnat")
    batch.chain("forward", "type filter hook forward priority filter")
    source_nat = [_mark(server.mark) for service in services if service.source_nat for server in service.servers]
    batch.refilled("set", SOURCE_NAT_SET, "type mark", source_nat)
    batch.rule("postrouting", f"ct mark @{SOURCE_NAT_SET} masquerade")
    for service in services:
        _nat_service(batch, service)
        for listen in service.listens:
            batch.rule("prerouting", f"ip daddr {listen.address} tcp dport {_ports(listen.ports)} "
                                     f"goto {chain_name(service.name)}")
    return batch


def _removed(family: str, table: str) -> list[str]:
    """Delete a table whether or not it exists (adding an existing table is no error)."""
    return [f"add table {family} {table}", f"delete table {family} {table}"]


def render_apply(ruleset: L4Ruleset, present: Sequence[TableObjects] = ()) -> str:
    """The full apply: both tables as the description says, in one transaction.

    `present` lists the objects the tables hold now (from `listing.table_objects`); the
    ones the description no longer has are deleted. A family with no service loses its
    table.
    """
    for service in ruleset.services:
        _check_service(service)
    by_mode = {mode: [service for service in ruleset.services if service.mode == mode] for mode in ("dr", "nat")}
    for services in by_mode.values():
        _check_shared(services)
    present_by_table = {(objects.family, objects.table): objects for objects in present}
    commands: list[str] = []
    for (family, table), services in ((DR_TABLE, by_mode["dr"]), (NAT_TABLE, by_mode["nat"])):
        if not services:
            commands += _removed(family, table)
            continue
        batch = _dr_table(services, ruleset) if family == "netdev" else _nat_table(services)
        commands += batch.render(present_by_table.get((family, table)))
    return "\n".join(commands) + "\n"


def render_teardown() -> str:
    """Remove every medlb table (stop means stop): pins and counters go with them."""
    return "\n".join(_removed(*DR_TABLE) + _removed(*NAT_TABLE)) + "\n"


# --- element-level updates -------------------------------------------------------------


def _structure(service: L4Service) -> tuple:
    """Everything a health or state change leaves alone."""
    return (service.name, service.mode, service.listens, service.interface, service.hash_key, service.source_nat,
            service.pin_timeout, service.pin_capacity, service.table.size, service.table.seed,
            tuple((server.name, server.mark, server.address, server.port) for server in service.servers))


def _diff(family: str, table: str, name: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Delete + add for every key whose value changed (nft refuses to add over a key)."""
    gone = [key for key in old if old[key] != new.get(key)]
    came = [(key, new[key]) for key in new if new[key] != old.get(key)]
    commands = []
    if gone:
        commands.append(f"delete element {family} {table} {name} {_elements(gone)}")
    if came:
        commands.append(f"add element {family} {table} {name} {_elements(came)}")
    return commands


def _slot_diff(family: str, table: str, old: L4Service, new: L4Service) -> list[str]:
    """`_diff` for the slot map, comparing the two tables bucket by bucket: a server
    leaving 1 of 3 changes some 21,845 of 65,537 buckets, and building the two whole
    element lists as text first took longer than nft takes to apply the change."""
    marks = {server.name: _mark(server.mark) for server in new.servers}
    gone: list[str] = []
    came: list[tuple[str, str]] = []
    for bucket, (before, after) in enumerate(zip(old.table.assignment(), new.table.assignment())):
        if before == after:
            continue
        if before is not None:
            gone.append(str(bucket))
        if after is not None:
            came.append((str(bucket), marks[after]))
    name = slots_map(new.name)
    commands = [f"delete element {family} {table} {name} {_elements(gone)}"] if gone else []
    return commands + ([f"add element {family} {table} {name} {_elements(came)}"] if came else [])


def render_update(old: L4Service, new: L4Service) -> str:
    """The elements a health or state change touches, as one batch ("" when none).

    Covers which servers take new flows (the Maglev table) and, for DR, which still
    forward established flows and at which MAC. A NAT server's established flows are
    conntrack's: cutting them (`on_halt: close`) is `conntrack -D --mark`, not a map.
    Anything else changed raises StructureChanged: render a full apply instead.
    """
    _check_service(new)
    if _structure(old) != _structure(new):
        raise StructureChanged(f"service {new.name!r}: more than the servers' states changed")
    family, table = DR_TABLE if new.mode == "dr" else NAT_TABLE
    commands = _slot_diff(family, table, old, new)
    if new.mode == "dr":
        commands += _diff(family, table, macs_map(new.name), dict(_mac_elements(old)), dict(_mac_elements(new)))
    return "\n".join(commands) + "\n" if commands else ""


def server_of_mark(service: L4Service, mark: int) -> L4Server | None:
    """The server a mark in a pin, a conntrack entry or a counter map stands for."""
    return next((server for server in service.servers if server.mark == mark), None)
