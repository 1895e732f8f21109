"""The kernel data plane: `l4-dr` and `l4-nat` services forwarded by nftables.

It keeps the data-plane contract (medlb/dataplane.py) beside the layer 7 listeners
and workers: a reload prepares by having the kernel check the whole new ruleset
(`nft -c`, nothing applied) and commits by applying it in one transaction, so a
refused reload changes nothing in the kernel. Between reloads it follows the runtime:
a health, state or failover change rewrites only the map elements it touches (one
transaction), and cuts established flows where `on_halt: close` says so.

The kernel forwards and medlb steers: killed with -9, medlb leaves the tables
forwarding; the next start adopts them (pins and counters kept, chains and maps
refilled). A stop removes them, or with `l4.on_stop: keep` leaves that service's.

nft and the host commands run in a thread so the event loop (the admin API, the
health checks) never waits on them; one lock keeps them in order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medlb import logs
from medlb.dataplane import Refused
from medlb.kernel import netlink, ruleset, system
from medlb.kernel.describe import describe, is_kernel
from medlb.kernel.host import addresses, host_problems
from medlb.kernel.description import L4Ruleset, L4Service
from medlb.kernel.listing import counters as listed_counters
from medlb.kernel.listing import map_elements, table_objects
from medlb.kernel.maglev import build_table
from medlb.kernel.nft import Nft, NftError
from medlb.tasks import spawn

if TYPE_CHECKING:
    from medlb.runtime import Change, Runtime, Service
    from medlb.runtime.model import ReloadPlan

log = logs.get_logger("medlb.kernel")

#: How often the neighbour table is read for a DR server's MAC that changed.
NEIGHBOUR_POLL = 1.0


@dataclass(eq=False)
class KernelPrepared:
    plane: KernelPlane
    names: frozenset[str]

    async def commit(self) -> list[int]:
        await self.plane._commit(self.names)
        return []

    async def discard(self) -> None:
        return None


@dataclass
class Applied:
    """What the kernel holds for one service, as medlb last wrote it."""

    service: L4Service
    at: float = field(default_factory=time.time)


class KernelPlane:
    def __init__(self, runtime: Runtime, nft: Nft | None = None):
        self.runtime = runtime
        self.nft = nft or Nft()
        #: Per service, what the kernel holds (empty while no layer 4 service runs).
        self.applied: dict[str, Applied] = {}
        #: (address, interface) -> MAC of every neighbour seen (see _neighbours).
        self.known_macs: dict[tuple[str, str], str] = {}
        #: The balancer's MAC on each interface a DR service uses.
        self.interface_macs: dict[str, str] = {}
        #: VIPs this process manages on an interface (and removes on stop).
        self.vips: set[tuple[ipaddress.IPv4Address, str]] = set()
        #: The last failure to program the kernel, for the API and the page; None when fine.
        self.error: str | None = None
        #: VIPs medlb could not add, and why; kept apart from `error`, which the next
        #: successful kernel update clears while the VIP is still missing.
        self.vip_errors: dict[tuple[ipaddress.IPv4Address, str], str] = {}
        #: Counters per (service, server) from the last collect: packets, bytes, new flows.
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self._dirty = False
        self._syncing: asyncio.Task[None] | None = None
        self._poll: asyncio.TimerHandle | None = None
        runtime.subscribe(self.on_changes)

    # --- which services ------------------------------------------------------------

    def _services(self, names: Iterable[str] | None = None) -> list[Service]:
        services = self.runtime.services
        wanted = services if names is None else names
        return [services[name] for name in wanted if name in services and is_kernel(services[name].config)]

    @property
    def problem(self) -> str | None:
        """What the API, page and metrics show as the kernel's error: the last failure to
        program it, else a VIP that could not be added."""
        return self.error or next(iter(self.vip_errors.values()), None)

    def serves(self, name: str) -> bool:
        return name in self.applied

    # --- prepare / commit -----------------------------------------------------------

    async def prepare(self, plan: ReloadPlan, base_dir: Path | None) -> KernelPrepared:
        services = [service for service in plan.services.values() if is_kernel(service.config)]
        names = frozenset(service.name for service in services)
        if not services and not self.applied:
            return KernelPrepared(self, names)  # no layer 4 service: nft is never run
        if services:
            problems = [problem for problem in await asyncio.to_thread(host_problems, plan.config)
                        if problem.level == "error"]
            if problems:
                raise Refused(*(f"{problem.service}: {problem.message}" if problem.service else problem.message
                                for problem in problems))
        async with self._lock:
            try:
                text, _ = await asyncio.to_thread(self._render, services)
                if services:
                    await asyncio.to_thread(self.nft.check, text)
            except (NftError, ruleset.RulesetError, OSError) as exc:
                raise Refused(f"the kernel refuses the layer 4 ruleset: {exc}") from None
        return KernelPrepared(self, names)

    def _macs(self, services: Iterable[Service]) -> dict[str, dict[str, str]]:
        """Per service, its servers' MACs on its interface (DR), from the neighbour table."""
        table = self._neighbours()
        found: dict[str, dict[str, str]] = {}
        for service in services:
            l4 = service.config.l4
            if service.config.mode != "l4-dr" or l4 is None:
                continue
            found[service.name] = {server.host: table[(server.host, l4.interface)]
                                   for server in service.servers() if (server.host, l4.interface) in table}
        return found

    def _neighbours(self) -> dict[tuple[str, str], str]:
        """The neighbour table, remembering MACs the kernel has since forgotten: an
        entry of an idle server may be garbage-collected, which must not cut its flows;
        only a different MAC replaces one."""
        self.known_macs.update(system.neighbours())
        return dict(self.known_macs)

    def _describe(self, services: list[Service]) -> L4Ruleset:
        macs = self._macs(services)
        described = [describe(service, macs.get(service.name)) for service in services]
        for service in described:
            if service.mode == "dr" and service.interface not in self.interface_macs:
                self.interface_macs[service.interface] = system.interface_mac(service.interface)
        return L4Ruleset(tuple(described), tuple(sorted(self.interface_macs.items())))

    def _render(self, services: list[Service], described: L4Ruleset | None = None) -> tuple[str, L4Ruleset]:
        """The full apply for these services over what the kernel holds now, and the
        description it renders (`described`, when the caller has just built it)."""
        if not services:
            return ruleset.render_teardown(), L4Ruleset(())
        listing = self.nft.terse()
        present = [table_objects(listing, family, table) for family, table in ruleset.TABLES]
        described = described or self._describe(services)
        return ruleset.render_apply(described, present), described

    async def _commit(self, names: frozenset[str]) -> None:
        """Make the committed config live; it was checked, so a failure here is the host
        changing under medlb (logged, shown, retried on the next change)."""
        async with self._lock:
            services = self._services(sorted(names))
            if not services and not self.applied:
                return
            try:
                text, described, how = await asyncio.to_thread(self._commit_text, services)
                if text:
                    await asyncio.to_thread(self.nft.apply, text)
            except (NftError, ruleset.RulesetError, OSError) as exc:
                self.error = str(exc)
                log.error("kernel_apply_failed", error=str(exc))
                return
            self.error = None
            removed = set(self.applied) - names
            now = time.time()
            self.applied = {service.name: self.applied[service.name]
                            if service.name in self.applied and self.applied[service.name].service == service
                            else Applied(service, now) for service in described.services}
            log.event("kernel_applied", services=sorted(self.applied), removed=sorted(removed), how=how)
            await asyncio.to_thread(self._host_settings, services)
        self._schedule_poll()

    def _commit_text(self, services: list[Service]) -> tuple[str, L4Ruleset, str]:
        """The batch that takes the kernel from what it holds to these services: at
        start, or when a service comes, goes or changes its rules, the full apply (which
        adopts what an earlier process left); otherwise only the elements that changed,
        and nothing at all for a reload that leaves the layer 4 services as they were."""
        if not self.applied or set(self.applied) != {service.name for service in services}:
            text, described = self._render(services)
            return text, described, "full"
        described = self._describe(services)
        batches = []
        for service in described.services:
            try:
                batches.append(ruleset.render_update(self.applied[service.name].service, service))
            except ruleset.StructureChanged:
                text, described = self._render(services, described)
                return text, described, "full"
        text = "".join(batches)
        return text, described, "elements" if text else "unchanged"

    def _host_settings(self, services: list[Service]) -> None:
        """The VIPs these services want on their interfaces, the ones medlb put there
        for services that left (or moved) off, and IPv4 forwarding on for NAT."""
        self._set_vips(services)
        if any(service.config.mode == "l4-nat" for service in services) and system.enable_ip_forward():
            log.warning("ip_forward_enabled", why="l4-nat services forward through this host")

    def _set_vips(self, services: list[Service]) -> None:
        """Make the VIPs medlb manages exactly those of `services` with `manage_vip`. A
        VIP two services share stays while either wants it; medlb removes only VIPs it
        added itself (or found there when it started managing them)."""
        wanted: dict[tuple[ipaddress.IPv4Address, str], str] = {}
        for service in services:
            l4 = service.config.l4
            if l4 is None or not l4.manage_vip or service.name not in self.applied:
                continue
            for listen in self.applied[service.name].service.listens:
                wanted.setdefault((listen.address, l4.interface), service.name)
        try:
            present = addresses()  # one `ip addr` read for every VIP below
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.error("vip_addresses_unreadable", error=str(exc))
            return
        for address, interface in sorted(self.vips - set(wanted)):
            try:
                if system.remove_vip(address, interface, present):
                    log.event("vip_removed", vip=str(address), interface=interface)
            except system.HostError as exc:
                log.error("vip_remove_failed", vip=str(address), interface=interface, error=str(exc))
            self.vips.discard((address, interface))
        for (address, interface), name in sorted(wanted.items()):
            try:
                added = system.add_vip(address, interface, present)
            except system.HostError as exc:
                self.vip_errors[(address, interface)] = str(exc)
                log.error("vip_add_failed", service=name, vip=str(address), error=str(exc))
                continue
            self.vip_errors.pop((address, interface), None)
            self.vips.add((address, interface))
            if added:
                log.event("vip_added", service=name, vip=str(address), interface=interface)

    # --- following the runtime --------------------------------------------------------

    def on_changes(self, changes: list[Change]) -> None:
        if any(change.service in self.applied for change in changes):
            self._request_sync()

    def _request_sync(self) -> None:
        self._dirty = True
        if self._syncing is None or self._syncing.done():
            self._syncing = spawn(self._sync(), name="kernel sync")

    async def settle(self) -> None:
        """Return once the kernel holds every change published so far (an answered
        API action is in force in the kernel too)."""
        while self._syncing is not None and not self._syncing.done():
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        """Bring the kernel's elements to the runtime's states, as often as asked; a
        burst of changes (a failover) becomes one or two transactions."""
        while self._dirty:
            self._dirty = False
            async with self._lock:
                await self._sync_once()

    async def _sync_once(self) -> None:
        services = self._services(sorted(self.applied))
        if not services:
            return
        try:
            new = await asyncio.to_thread(self._describe, services)
        except OSError as exc:
            self.error = f"cannot read the host's interfaces or neighbours: {exc}"
            log.error("kernel_sync_failed", error=self.error)
            return
        batches: list[str] = []
        full = False
        cut: list[tuple[L4Service, int]] = []
        for service in new.services:
            old = self.applied[service.name].service
            if old == service:
                continue
            try:
                batches.append(ruleset.render_update(old, service))
            except ruleset.StructureChanged:
                full = True
            was_forwarding = {server.name for server in old.servers if server.forwarding}
            cut += [(service, server.mark) for server in service.servers
                    if server.name in was_forwarding and not server.forwarding]
        try:
            if full:
                text, new = await asyncio.to_thread(self._render, services, new)
                await asyncio.to_thread(self.nft.apply, text)
            elif any(batches):
                await asyncio.to_thread(self.nft.apply, "".join(batches))
        except (NftError, ruleset.RulesetError, OSError) as exc:
            self.error = str(exc)
            log.error("kernel_update_failed", error=str(exc))
            return
        self.error = None
        now = time.time()
        for service in new.services:
            if self.applied[service.name].service != service:
                self.applied[service.name] = Applied(service, now)
                log.event("kernel_updated", service=service.name,
                          taking=sorted(service.table.servers),
                          forwarding=sorted(s.name for s in service.servers if s.forwarding))
        for service, mark in cut:
            await asyncio.to_thread(self._cut, service, mark)

    def _cut(self, service: L4Service, mark: int) -> None:
        """End a server's established flows at once (`on_halt: close`): NAT by deleting
        its conntrack entries, DR by dropping its pins (its MAC already left the map)."""
        server = ruleset.server_of_mark(service, mark)
        name = server.name if server is not None else hex(mark)
        try:
            if service.mode == "nat":
                count = system.conntrack_delete(mark)
            else:
                count = self._drop_pins(service, mark)
        except (system.HostError, NftError) as exc:
            log.error("flows_cut_failed", service=service.name, server=name, error=str(exc))
            return
        log.event("flows_cut", service=service.name, server=name, flows=count, why="on_halt: close")

    def _drop_pins(self, service: L4Service, mark: int) -> int:
        family, table = ruleset.DR_TABLE
        name = ruleset.pins_map(service)
        listing = self.nft.list_map(family, table, name)
        keys = [key for key, value in map_elements(listing, name).items() if value == mark]
        if not keys:
            return 0
        rendered = [" . ".join(str(part) for part in key) if isinstance(key, tuple) else str(key) for key in keys]
        try:
            self.nft.apply(f"delete element {family} {table} {name} {{ {', '.join(rendered)} }}\n")
        except NftError:  # a pin expired in between: drop the rest one by one
            for key in rendered:
                try:
                    self.nft.apply(f"delete element {family} {table} {name} {{ {key} }}\n")
                except NftError:
                    pass
        return len(keys)

    def _schedule_poll(self) -> None:
        """Follow DR servers' MACs: a server whose NIC (and so MAC) changed gets its new one."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if any(applied.service.mode == "dr" for applied in self.applied.values()):
            self._poll = asyncio.get_running_loop().call_later(NEIGHBOUR_POLL, self._check_neighbours)

    def _check_neighbours(self) -> None:
        """A MAC learnt (the first check resolved it), changed or forgotten."""
        self._poll = None
        try:
            table = self._neighbours()
        except OSError:
            table = {}
        for applied in self.applied.values():
            service = applied.service
            if service.mode != "dr":
                continue
            for server in service.servers:
                if table.get((str(server.address), service.interface)) != server.mac:
                    self._request_sync()
                    break
        self._schedule_poll()

    def verify(self, service_name: str, host: str) -> str | None:
        """For the health checks: why a server that answered cannot take flows anyway
        (a DR server whose MAC is not in the neighbour table), or None."""
        service = self.runtime.services.get(service_name)
        if service is None or service.config.mode != "l4-dr" or service.config.l4 is None:
            return None
        interface = service.config.l4.interface
        if (host, interface) in self.known_macs:
            return None  # the poll keeps these fresh; a miss reads the table once more
        try:
            if (host, interface) in self._neighbours():
                return None
        except OSError:
            return None
        return f"its MAC on {interface} is unknown (no complete entry for {host} in the neighbour table)"

    # --- counters and the view ----------------------------------------------------------

    async def collect(self) -> None:
        """Read the kernel's counters into the servers' statistics (and `counts`)."""
        if not self.applied:
            return
        try:  # no lock: reading never waits for, nor delays, an update
            listings = await asyncio.to_thread(self._list_counters)
        except NftError as exc:
            log.error("kernel_counters_failed", error=str(exc))
            return
        self._take_counters(listings)

    def _list_counters(self) -> dict[str, tuple[int, int]]:
        """Over netlink (about a millisecond); nft's terse listing of the ruleset (60 ms)
        when netlink cannot."""
        found: dict[str, tuple[int, int]] = {}
        modes = {applied.service.mode for applied in self.applied.values()}
        tables = [table for mode, table in (("dr", ruleset.DR_TABLE), ("nat", ruleset.NAT_TABLE)) if mode in modes]
        try:
            for family, table in tables:
                found.update(netlink.counters(family, table))
        except OSError:
            listing = self.nft.terse()
            for family, table in tables:
                found.update(listed_counters(listing, family, table))
        return found

    def _take_counters(self, found: dict[str, tuple[int, int]]) -> None:
        for name, applied in self.applied.items():
            service = self.runtime.services.get(name)
            for server in applied.service.servers:
                packets, octets = found.get(ruleset.traffic_counter(name, server.name), (0, 0))
                reply_packets, reply_octets = found.get(ruleset.replies_counter(name, server.name), (0, 0))
                new_flows = found.get(ruleset.new_flows_counter(name, server.name), (0, 0))[0]
                self.counts[(name, server.name)] = {"packets": packets + reply_packets, "bytes": octets + reply_octets,
                                                    "new_flows": new_flows}
                live = service.server(server.name) if service is not None else None
                if live is not None:
                    live.total = new_flows
                    live.bytes_to_server, live.bytes_to_client = octets, reply_octets
            no_server = found.get(ruleset.no_server_counter(name), (0, 0))
            self.counts[(name, "")] = {"packets": no_server[0], "bytes": no_server[1], "new_flows": 0}
            if service is not None:
                service.counters.no_server = no_server[0]
                # The service's connections are its new flows (the overview, the charts).
                service.counters.total = sum(self.counts[(name, server.name)]["new_flows"]
                                             for server in applied.service.servers)

    async def view(self, name: str, flows: bool = True) -> dict[str, Any]:
        """What the kernel does for one service: its rules (the slot map summarised),
        each server's kernel state and counters, and flows (NAT: conntrack; DR: pins).
        Without `flows` they are not counted (null): listing 100,000 pins takes seconds,
        too long for a page's refresh every 5 s."""
        applied = self.applied.get(name)
        if applied is None:
            raise KeyError(name)
        await self.collect()
        service = applied.service
        counted = await asyncio.to_thread(self._flows, service) if flows else {}
        rules = await asyncio.to_thread(self.rules_text, name)
        shares = service.table.shares()
        family, table = ruleset.DR_TABLE if service.mode == "dr" else ruleset.NAT_TABLE
        servers = []
        for server in service.servers:
            counts = self.counts.get((name, server.name), {})
            servers.append({"name": server.name, "mark": f"0x{server.mark:08x}", "address": str(server.address),
                            "port": server.port, "mac": server.mac, "takes_new_flows": server.name in shares,
                            "forwarding": server.forwarding, "share": round(shares.get(server.name, 0.0), 4),
                            "packets": counts.get("packets", 0), "bytes": counts.get("bytes", 0),
                            "new_flows": counts.get("new_flows", 0), "flows": counted.get(server.mark)})
        return {"service": name, "mode": f"l4-{service.mode}", "table": f"{family} {table}",
                "chain": ruleset.chain_name(name), "interface": service.interface,
                "hash": "ip saddr . tcp sport" if service.hash_key == "flow" else "ip saddr",
                "table_size": service.table.size, "seed": f"0x{service.table.seed:08x}",
                "flows_counted_by": "conntrack" if service.mode == "nat" else "pins",
                "servers": servers, "no_server": self.counts.get((name, ""), {}),
                "applied_at": applied.at, "error": self.problem,
                "ruleset": rules}

    async def metric_counts(self) -> dict[str, Any]:
        """For /metrics, after `collect()`: per service its mode, each server's counters,
        NAT servers' conntrack entries (one dump, counted by mark) and the no-server drops; and the last programming error. DR
        pins are not counted per scrape: listing 100,000 of them takes seconds."""
        services: dict[str, Any] = {}
        for name, applied in self.applied.items():
            service = applied.service
            counted = await asyncio.to_thread(self._flows, service) if service.mode == "nat" else {}
            services[name] = {
                "mode": f"l4-{service.mode}",
                "servers": {server.name: {**self.counts.get((name, server.name), {}),
                                          "flows": counted.get(server.mark)} for server in service.servers},
                "no_server": self.counts.get((name, ""), {})}
        return {"error": self.problem, "services": services}

    def _flows(self, service: L4Service) -> dict[int, int]:
        """Established flows per server mark: conntrack entries (NAT) or pins (DR)."""
        try:
            if service.mode == "nat":
                marks = system.conntrack_by_mark()
                return {server.mark: marks[server.mark] for server in service.servers}
            family, table = ruleset.DR_TABLE
            name = ruleset.pins_map(service)
            counted: dict[int, int] = {}
            for value in map_elements(self.nft.list_map(family, table, name), name).values():
                counted[value] = counted.get(value, 0) + 1
            return counted
        except (system.HostError, NftError, KeyError):
            return {}

    def rules_text(self, name: str) -> str:
        """The service's part of the ruleset as medlb renders it, the Maglev slot map
        summarised: 65,537 lines say less than each server's share, and rendering
        them only to drop them took 0.3 s."""
        applied = self.applied.get(name)
        if applied is None:
            return ""
        service = applied.service
        empty = build_table({}, seed=service.table.seed, size=service.table.size)
        text = ruleset.render_apply(L4Ruleset((replace(service, table=empty),), tuple(sorted(self.interface_macs.items()))))
        slots = ruleset.slots_map(name)
        shares = ", ".join(f"{server}: {count}" for server, count in sorted(service.table.counts().items()))
        summary = f"# {slots}: {service.table.size} slots ({shares or 'none: no server takes new flows'})"
        lines = []
        for line in text.splitlines():
            lines.append(line)
            if line.startswith("flush map") and line.endswith(f" {slots}"):
                lines.append(summary)
        return "\n".join(lines) + "\n"

    # --- stop ------------------------------------------------------------------------

    async def stop(self, timeout: float) -> int:
        """Remove the tables and the VIPs medlb added, but keep the services written
        with `l4.on_stop: keep` forwarding (a restart or an upgrade adopts them)."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if not self.applied:
            return 0
        async with self._lock:
            kept = [service for service in self._services(sorted(self.applied))
                    if service.config.l4 is not None and service.config.l4.on_stop == "keep"]
            try:
                text, _ = await asyncio.to_thread(self._render, kept)
                await asyncio.to_thread(self.nft.apply, text)
            except (NftError, ruleset.RulesetError, OSError) as exc:
                log.error("kernel_stop_failed", error=str(exc))
            gone = set(self.applied) - {service.name for service in kept}
            await asyncio.to_thread(self._set_vips, kept)
            log.event("kernel_stopped", removed=sorted(gone), kept=sorted(s.name for s in kept))
            self.applied = {name: applied for name, applied in self.applied.items() if name not in gone}
        return 0
