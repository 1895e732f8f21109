"""Load a config file and explain every problem with its path and line, in one pass.

The operator's question after a typo at 3 a.m. is "where?", so every problem carries
the path in the file (`services[0] (vna).servers[1] (vna2).address`) and the line it
sits on. YAML is composed into nodes first, to keep each node's line, then turned into
plain data that pydantic validates; the checks that span keys run next to it, on the
file as written (span.py) and on each section that validates alone, and the files the
config names are read (files.py), so that one pass finds every problem.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from medlb import descriptors
from medlb.config.models import (
    AVAILABLE_CHECKS,
    AVAILABLE_MODES,
    AVAILABLE_PERSISTENCE,
    AVAILABLE_SCHEDULERS,
    L4_MODES,
    L4_SCHEDULERS,
    POOL_MODES,
    TLS_MODES,
    AdminConfig,
    BackendTlsConfig,
    Config,
    HaConfig,
    ServiceConfig,
    TlsConfig,
)
from medlb.config.files import file_problems
from medlb.config.span import Add, span_checks, valid, written_servers, written_services
from medlb.config.units import parse_server_address
from medlb.config.wording import explain

from medlb.config.problems import ConfigError, Locations, PathKey, Problem, format_path

#: What a failover of the pair does not carry across: the pair syncs its config and the
#: operator's decisions, but not the workers' memory nor the kernel's connection table.
HA_NOT_CARRIED = ("at a failover of the pair, {what}; the config, operator decisions and source-IP "
                  "persistence entries are synced "
                  "(docs/ha.md, \"What a failover does to established connections\")")


__all__ = ["ConfigError", "LoadedConfig", "Locations", "PathKey", "Problem", "format_path", "load_config",
           "parse_config", "print_problems", "read_secret"]


@dataclass
class LoadedConfig:
    """A validated config, where it came from, what it cannot run yet (`warnings`:
    medlb run, a reload and a config apply refuse the file) and what an operator
    should know about it (`advisories`: shown and logged, never a reason to refuse)."""

    config: Config
    source: str
    base_dir: Path
    warnings: list[Problem] = field(default_factory=list)
    advisories: list[Problem] = field(default_factory=list)
    #: Where every key and list item is, for problems found later (the host checks of
    #: the kernel layer 4 modes).
    where: Locations = field(default_factory=Locations, repr=False)
    #: The text it was read from (the pair compares and sends it).
    text: str = field(default="", repr=False)

    def problem(self, path: PathKey, message: str) -> Problem:
        """A problem at `path` of this file, on its line."""
        return self.where.problem(path, message)

    @property
    def state_dir(self) -> Path:
        """state_dir, relative paths taken from the config file's folder."""
        path = Path(self.config.state_dir)
        return path if path.is_absolute() else (self.base_dir / path)


def print_problems(heading: str, problems: Sequence[object]) -> None:
    """What `medlb check`, `run` and `plan` print for a file they refuse: the heading
    and one problem a line, on stderr."""
    print(f"{heading}, {len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def _compose(text: str, source: str) -> tuple[Any, Locations, list[Problem]]:
    """Plain data from YAML, where every key and list item is, and the keys that are
    no plain word or appear twice (the file is read on, so that the rest is checked
    in the same pass: a key that appears twice keeps its last value, as YAML says)."""
    loader = yaml.SafeLoader(text)
    where = Locations()
    lines, names = where.lines, where.names
    found: list[tuple[PathKey, int, str]] = []

    def walk(node: yaml.Node, path: PathKey) -> Any:
        if isinstance(node, yaml.MappingNode):
            own: set[Any] = set()
            plain = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    plain.append((key_node, value_node))
                    continue
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int)):
                    found.append((path, key_node.start_mark.line + 1, "keys must be plain words"))
                    continue
                if key in own:
                    found.append((path + (str(key),), key_node.start_mark.line + 1, "this key appears twice"))
                own.add(key)
                plain.append((key_node, value_node))
            node.value = plain
            # Merged keys (`<<: *anchor`) come first, so the mapping's own keys override them.
            loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = str(loader.construct_object(key_node, deep=True))
                lines[path + (key,)] = key_node.start_mark.line + 1
                result[key] = walk(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                items.append(walk(item, path + (index,)))
                if isinstance(items[-1], dict) and isinstance(items[-1].get("name"), str):
                    names[path + (index,)] = items[-1]["name"]
            return items
        return loader.construct_object(node, deep=True)

    try:
        root = loader.get_single_node()
        data = {} if root is None else walk(root, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", line, f"not valid YAML: {problem}", column)]) from None
    finally:
        loader.dispose()
    return data, where, [Problem(format_path(path), line, message, shown=where.show(path))
                         for path, line, message in found]


def _locate(loc: tuple[Any, ...], data: Any) -> PathKey:
    """Turn a pydantic error location into a path that exists in the file.

    Pydantic inserts the tag of a tagged union (`health.http.path`); such parts are not
    keys of the file and are skipped. A missing key is reported on its parent's line.
    """
    path: PathKey = ()
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path += (part,)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path += (part,)
        elif isinstance(node, dict) and isinstance(part, str) and part.replace("-", "").isalnum() \
                and node.get("type") == part:
            continue  # the union tag
        else:
            path += (part,)
            node = None
    return path


def _service_checks(service: ServiceConfig, written: dict[str, Any], base: PathKey, add: Add) -> None:
    """Checks that span the keys of one service that validated: sections and the mode,
    pools and the routes that name them."""
    for pool_name in service.pools:
        if pool_name == "default":
            add(base + ("pools", pool_name), "'default' is the pool of servers/backup; choose another name")
    if service.mode == "http":
        for path, server in written_servers(written):
            if parse_server_address(server["address"]).port is None:
                add(base + path + ("address",), "mode http needs a port in each server address")
    known_pools = {"default", *service.pools}
    route_sets = [("dicom", service.dicom.routes if service.dicom else []),
                  ("http", service.http.routes if service.http else [])]
    for section, routes in route_sets:
        for r_index, route in enumerate(routes):
            if route.pool not in known_pools:
                add(base + (section, "routes", r_index, "pool"),
                    f"no pool named {route.pool!r}; known: {', '.join(sorted(known_pools))}")
    if service.mode in L4_MODES:
        _l4_checks(service, written, base, add)
    else:
        if service.l4 is not None:
            add(base + ("l4",), "the l4 section needs mode: l4-dr or mode: l4-nat")
        if service.scheduler == "maglev":
            add(base + ("scheduler",), "scheduler maglev is for the kernel layer 4 modes (l4-dr, l4-nat); "
                                       "a layer 7 mode uses roundrobin, leastconn or source")
    if service.persistence.type == "cookie" and service.mode != "http":
        add(base + ("persistence", "type"), "cookie persistence needs mode: http")
    if service.dicom is not None and service.mode != "dicom" and service.mode not in L4_MODES:
        add(base + ("dicom",), "the dicom section needs mode: dicom")
    if service.dicom is not None and service.dicom.unrouted == "reject" and not service.dicom.routes:
        add(base + ("dicom", "unrouted"), "unrouted: reject without routes would reject every association")
    if service.mllp is not None and service.mode != "mllp" and service.mode not in L4_MODES:
        add(base + ("mllp",), "the mllp section needs mode: mllp")
    if service.mllp is not None and service.mllp.partial_frames_budget < service.mllp.max_message_size:
        add(base + ("mllp", "partial_frames_budget"),
            f"smaller than max_message_size ({service.mllp.max_message_size} bytes): "
            "a message of that size could never be received")
    if service.http is not None and service.mode != "http" and service.mode not in L4_MODES:
        add(base + ("http",), "the http section needs mode: http")
    if service.health.type != "none" and service.health.timeout > service.health.interval:
        add(base + ("health", "timeout"), "the timeout is longer than the interval")


def _tls_checks(written: dict[str, Any], base: PathKey, add: Add) -> None:
    """What medlb could not build a TLS context from (medlb/tls.py refuses it at run
    time); on the sections as written, each validated alone, so that a mistake
    elsewhere in the service does not hide these."""
    tls, backend = valid(TlsConfig, written.get("tls")), valid(BackendTlsConfig, written.get("backend_tls"))
    if tls is not None:
        if tls.cert is not None and tls.key is None:
            add(base + ("tls", "cert"), "tls.cert needs tls.key (the certificate's private key)")
        elif tls.key is not None and tls.cert is None:
            add(base + ("tls", "key"), "tls.key needs tls.cert (the certificate the key belongs to)")
        elif tls.cert is None and not tls.certificates:
            add(base + ("tls",), "tls needs cert and key, or certificates")
        if tls.verify_client != "none" and tls.client_ca is None:
            add(base + ("tls", "verify_client"), f"verify_client: {tls.verify_client} needs client_ca (the CA "
                                                 "that signs the clients' certificates)")
    if backend is not None and backend.key is not None and backend.cert is None:
        add(base + ("backend_tls", "key"), "backend_tls.key needs backend_tls.cert (the client certificate "
                                           "medlb presents to the servers)")


#: Why a section written on a kernel layer 4 service is refused.
_L4_NO_SECTION = {
    "dicom": "the kernel forwards packets and never reads DICOM; use mode dicom for AE title routing",
    "mllp": "the kernel forwards packets and never reads HL7; use mode mllp to balance per message",
    "http": "the kernel forwards packets and never reads HTTP; use mode http",
    "tls": "the kernel forwards packets and cannot terminate TLS; clients' TLS passes through to the servers "
           "untouched, so the servers hold the certificate",
    "backend_tls": "the kernel forwards the client's own connection; there is no connection of medlb's "
                   "to the servers to encrypt",
    "pools": "named pools are used only by dicom and http routes",
}


def _l4_checks(service: ServiceConfig, written: dict[str, Any], base: PathKey, add: Add) -> None:
    """What a kernel layer 4 service cannot mean: the kernel forwards packets to IPv4
    addresses from nftables maps and holds no connection, so every key that needs medlb
    to read the protocol, terminate a connection or resolve a name is refused here
    rather than silently ignored."""
    mode = service.mode
    for section, why in _L4_NO_SECTION.items():
        if section in written:
            add(base + (section,), f"{section} means nothing for a kernel layer 4 service: {why}")
    for key in written.get("limits") or {}:
        add(base + ("limits", key), f"limits.{key} means nothing for a kernel layer 4 service "
                                    "(the kernel forwards; medlb holds no connection)")
    if service.scheduler not in L4_SCHEDULERS:
        why = ("leastconn needs connection counts the kernel path does not keep" if service.scheduler == "leastconn"
               else f"{service.scheduler} needs a turn per connection the kernel path does not keep")
        add(base + ("scheduler",), f"scheduler {service.scheduler} is not available in mode {mode}: the kernel picks "
                                   f"by Maglev hashing (maglev, the default; or source, by client address alone); {why}")
    persistence = written.get("persistence")
    if service.persistence.type == "source-ip" and isinstance(persistence, dict):
        for key in (key for key in persistence if key != "type"):
            add(base + ("persistence", key), f"persistence.{key} means nothing for a kernel layer 4 service: the "
                                             "kernel hashes the whole client address (and in l4-dr pins it for "
                                             "l4.pin_timeout)")
    l4_written = written.get("l4") or {}
    if mode == "l4-dr" and "source_nat" in l4_written:
        add(base + ("l4", "source_nat"), "source_nat is for l4-nat: in l4-dr the servers answer the clients "
                                         "directly, from the VIP")
    if mode == "l4-nat" and "pin_timeout" in l4_written:
        add(base + ("l4", "pin_timeout"), "pin_timeout is for l4-dr: in l4-nat conntrack keeps each connection "
                                          "on its server for as long as it lives")

    for l_index, item in enumerate(service.listen):
        host = item[0].host
        try:
            vip = ipaddress.ip_address(host)
        except ValueError:
            add(base + ("listen", l_index), f"{host!r}: the VIP of mode {mode} is an IPv4 address, not a host name")
            continue
        if vip.version != 4:
            add(base + ("listen", l_index), f"{host}: IPv4 only in this release for l4 modes")
        elif vip.is_unspecified:
            add(base + ("listen", l_index), "0.0.0.0 (every address) cannot be a VIP of mode "
                                            f"{mode}: the kernel forwards packets for one address; write the VIP")
        elif vip.is_loopback or vip.is_multicast or vip == ipaddress.IPv4Address("255.255.255.255"):
            add(base + ("listen", l_index), f"{host} cannot be a VIP: clients' packets never reach it on an interface")

    ports = sorted({address.port for address in service.addresses})
    groups = [("servers", service.servers), ("backup", service.backup)]
    servers = [((group, index), server) for group, members in groups for index, server in enumerate(members)]
    first_where, first = servers[0]
    for (group, index), server in servers:
        where = base + (group, index, "address")
        host, port = server.address.host, server.address.port
        try:
            ip = ipaddress.ip_address(host)
            if ip.version != 4:
                add(where, f"{host}: IPv4 only in this release for l4 modes")
                continue
            if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
                add(where, f"{host} cannot be a server of mode {mode}: the kernel forwards only to another host")
                continue
        except ValueError:
            add(where, f"{host!r}: a server of mode {mode} is an IPv4 address, not a host name (the kernel's "
                       "maps hold addresses; a name resolved once would go stale without a word)")
            continue
        if port is None:
            if mode == "l4-nat" and first.address.port is not None:
                add(where, f"either every server of an l4-nat service has a port or none has (the kernel keeps one "
                           f"address map per service); {format_path(first_where)} has one, this one has none")
            continue
        if mode == "l4-dr" and len(ports) > 1:
            add(where, f"DR does not rewrite the packet: the server must listen on every VIP port "
                       f"({', '.join(map(str, ports))}); write {host} without a port")
        elif mode == "l4-dr" and port != ports[0]:
            add(where, f"DR does not rewrite the packet: the server must listen on the VIP port ({ports[0]}); "
                       f"write {host} or {host}:{ports[0]}")
        elif mode == "l4-nat" and len(ports) > 1:
            add(where, "a server port on a multi-port VIP would send every VIP port to that one port; write "
                       f"{host} without a port (each connection goes to the port the client called)")
        elif mode == "l4-nat" and first.address.port is None:
            add(where, f"either every server of an l4-nat service has a port or none has (the kernel keeps one "
                       f"address map per service); {format_path(first_where)} has none, this one has one")


def _availability(config: Config, where: Locations) -> list[Problem]:
    """Parts of a valid config that this release cannot run yet."""
    notes: list[Problem] = []

    def add(path: PathKey, message: str) -> None:
        notes.append(where.problem(path, message))

    for index, service in enumerate(config.services):
        base: PathKey = ("services", index)
        if service.mode not in AVAILABLE_MODES:
            add(base + ("mode",), f"mode {service.mode!r} is not yet available in this release; medlb run will not start service {service.name!r}")
            continue
        if service.mode in L4_MODES:
            continue  # what a kernel layer 4 service cannot run is an error (_l4_checks)
        if service.health.type not in AVAILABLE_CHECKS:
            add(base + ("health", "type"), f"health check {service.health.type!r} is not yet available in this release")
        if service.scheduler not in AVAILABLE_SCHEDULERS:
            add(base + ("scheduler",), f"scheduler {service.scheduler!r} is not yet available in this release")
        if service.persistence.type not in AVAILABLE_PERSISTENCE:
            add(base + ("persistence", "type"), f"persistence {service.persistence.type!r} is not yet available in mode {service.mode}")
        if service.tls is not None and service.mode not in TLS_MODES:
            add(base + ("tls",), f"TLS is not yet available in mode {service.mode}")
        if service.backend_tls is not None and service.mode not in TLS_MODES:
            add(base + ("backend_tls",), f"backend TLS is not yet available in mode {service.mode}")
        if service.pools and service.mode not in POOL_MODES:
            add(base + ("pools",), "named pools are used only by dicom and http routes; "
                                   f"mode {service.mode} does not use them")
    return notes


def _advisories(config: Config, where: Locations, open_files: int | None) -> list[Problem]:
    """What medlb runs with but an operator should change, in this host's terms."""
    advisories: list[Problem] = []
    hard = open_files if open_files is not None else descriptors.open_files_limit()[1]
    room = descriptors.capacity(config, hard)
    wanted = sum(service.limits.max_connections for service in config.services if service.mode not in L4_MODES)
    if wanted > room.connections:
        processes = "one process" if room.processes == 1 else f"{room.processes} workers"
        advisories.append(where.problem(("services",), (
            f"max_connections adds up to {wanted} over all services, but the open-file limit here "
            f"({hard}, the hard limit medlb run raises to) holds {room.connections} connections in {processes} "
            f"({descriptors.PER_CONNECTION} descriptors each, {room.reserve} kept in reserve per process); "
            "beyond that clients are refused. Raise the limit (LimitNOFILE) or lower max_connections")))
    if config.ha is not None:
        not_carried = ha_not_carried(config)
        if not_carried:
            advisories.append(where.problem(("ha",), HA_NOT_CARRIED.format(what="; ".join(not_carried))))
    return advisories


def ha_not_carried(config: Config) -> list[str]:
    """What of this config's services does not move to the peer at a failover (NAT
    connections live in this node's conntrack; source-IP persistence entries are copied
    to the peer, medlb/ha/sticky.py)."""
    nat = [s.name for s in config.services if s.mode == "l4-nat"]
    if not nat:
        return []
    return [f"l4-nat connections are not carried (conntrackd is not run): clients of {', '.join(nat)} reconnect"]


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None,
                 open_files: int | None = None, read_files: bool = False,
                 local_hosts: Collection[str] = ()) -> LoadedConfig:
    """Validate config text; raise ConfigError with every problem found, sorted by line.
    Advisories weigh the config against `open_files` descriptors (default: this
    process's hard limit, which medlb run raises its own to). `read_files`: read every
    file the config names (certificates, keys, CAs, token files), from `base_dir`.
    `local_hosts`: this host's addresses, so a server that is one of them on a port
    medlb listens on with 0.0.0.0 or :: is refused (it would loop into medlb).

    The checks that span keys run even when some keys are wrong: those over names and
    addresses on the file as written (config/span.py), the others on each section that
    validates on its own, so one pass finds every problem."""
    data, where, problems = _compose(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", 1, "the file must be a mapping with admin, state_dir and services")])
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [where.problem(_locate(error["loc"], data), explain(error, Config)) for error in exc.errors()]
    problems += span_checks(data, where, local_hosts)
    written = written_services(data)
    services = config.services if config is not None else [valid(ServiceConfig, raw) for raw in written]
    admin = config.admin if config is not None else valid(AdminConfig, data.get("admin"))
    ha = config.ha if config is not None else valid(HaConfig, data.get("ha"))

    def add(path: PathKey, message: str) -> None:
        problems.append(where.problem(path, message))

    for index, service in enumerate(services):
        if service is not None:
            _service_checks(service, written[index], ("services", index), add)
        _tls_checks(written[index], ("services", index), add)
    if admin is not None:
        _admin_checks(admin, add)
    if ha is not None:
        _ha_checks(ha, admin, data.get("admin") is not None, add)
    if read_files:
        problems += file_problems(data, base_dir or Path.cwd(), where)
    if problems or config is None:
        raise ConfigError(source, sorted(problems, key=lambda problem: (problem.line or 0, problem.column or 0)))
    return LoadedConfig(config, source, base_dir or Path.cwd(), _availability(config, where),
                        _advisories(config, where, open_files), where, text)


def _admin_checks(admin: AdminConfig, add: Add) -> None:
    """Who may use the admin API: someone must, and each name and token once."""
    if not (admin.token or admin.token_file or admin.tokens or admin.users):
        add(("admin",), "the admin API needs a token, token_file, tokens or users")
    user_names: set[str] = set()
    for index, user in enumerate(admin.users):
        if user.name in user_names:
            add(("admin", "users", index, "name"), f"user name {user.name!r} is used twice")
        user_names.add(user.name)
        if not valid_hash(user.password_hash):
            add(("admin", "users", index, "password_hash"),
                "not a password hash medlb can check; make one with `medlb passwd`")
    names: set[str] = set()
    values = [admin.token] if admin.token else []
    for index, token in enumerate(admin.tokens):
        if token.token is not None and token.token in values:
            add(("admin", "tokens", index, "token"), "this token value is already used by another token; each needs its own")
        if token.token is not None:
            values.append(token.token)
        if token.name in names:
            add(("admin", "tokens", index, "name"), f"token name {token.name!r} is used twice")
        names.add(token.name)
        if (token.token is None) == (token.token_file is None):
            add(("admin", "tokens", index), "give exactly one of token and token_file")


def valid_hash(encoded: str) -> bool:
    from medlb.passwords import parse_hash

    return parse_hash(encoded) is not None


def load_config(path: str | os.PathLike[str], read_files: bool = True,
                local_hosts: Collection[str] = ()) -> LoadedConfig:
    """Read and validate a config file and, unless `read_files` is False, every file it
    names (what `medlb run` and a reload read). `local_hosts`: as for parse_config."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [Problem("", None, f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), [Problem("", None, "the file is not UTF-8 text")]) from None
    return parse_config(text, str(file), file.resolve().parent, read_files=read_files, local_hosts=local_hosts)


def read_secret(path: str, base_dir: Path) -> str:
    """A token or password from a file; the first line, stripped."""
    file = Path(path)
    file = file if file.is_absolute() else base_dir / file
    return file.read_text(encoding="utf-8").strip().splitlines()[0].strip()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _ha_checks(ha: HaConfig, admin: AdminConfig | None, admin_written: bool, add: Add) -> None:
    """What makes a pair's two nodes ambiguous to each other or unreachable: the same
    name, address or priority twice, a VIP that is a node's own address, an admin API
    the peer cannot reach (the nodes sync over it)."""
    first, second = ha.nodes
    for key, why in (("name", "each node must know which entry is itself"),
                     ("address", "VRRP tells the nodes apart by address"),
                     ("priority", "equal priorities leave the election to the addresses; give the node that "
                                  "should be active the higher one")):
        if getattr(first, key) == getattr(second, key):
            add(("ha", "nodes", 1, key), f"nodes[0] has the same {key} ({getattr(first, key)}); {why}")
    node_addresses = {node.address: index for index, node in enumerate(ha.nodes)}
    seen: dict[Any, int] = {}
    for index, vip in enumerate(ha.vips):
        if vip.ip in node_addresses:
            add(("ha", "vips", index), f"{vip.ip} is the address of nodes[{node_addresses[vip.ip]}]; a VIP moves "
                                       "between the nodes, so it must be an address of neither")
        if vip.ip in seen:
            add(("ha", "vips", index), f"{vip.ip} is already vips[{seen[vip.ip]}]")
        seen.setdefault(vip.ip, index)
    if not admin_written:
        add(("ha",), "the pair needs an admin: section: the nodes sync their config and "
                     "operator decisions over each other's admin API")
    elif admin is not None and admin.tls == "off":
        add(("admin", "tls"), "the pair syncs configs and decisions over HTTPS: admin.tls must not be off "
                              "(auto makes a self-signed certificate, which the peer pins on first contact)")
    elif admin is not None and _loopback(admin.listen.host):
        add(("admin", "listen"), f"{admin.listen} is loopback only, but the peer node syncs over this admin API; "
                                 "listen on an address the other node reaches (0.0.0.0 on both nodes)")
