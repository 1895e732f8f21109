"""The checks that span keys, run on the file as written: names used twice, a port
used twice, a server that is medlb's own listen address.

They read the plain data, not the validated model, so that they run even when some
other key of the file is wrong: an operator fixing a file gets every problem in one
pass rather than a new one after each fix. A value they cannot read (a listen address
with a typo) is left out here; validation reports it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from medlb.config.models import L4_MODES, AdminConfig
from medlb.config.problems import Locations, PathKey, Problem
from medlb.config.units import HostPort, listen_overlaps, parse_listen, parse_server_address

Add = Callable[[PathKey, str], None]


Model = TypeVar("Model", bound=BaseModel)


def valid(model: type[Model], value: Any) -> Model | None:
    """`value` as `model` if it validates alone, else None (its errors are reported by
    the validation of the whole file)."""
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _parsed(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except (ValueError, TypeError):
        return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def written_services(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each service as written (an entry that is no mapping reads as empty)."""
    services = data.get("services")
    return [_mapping(service) for service in services] if isinstance(services, list) else []


def written_listen(service: dict[str, Any]) -> list[list[HostPort]]:
    """The listen addresses of each listen item, ranges expanded; [] for an unreadable one."""
    value = service.get("listen")
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [_parsed(parse_listen, item) or [] for item in items]


def written_servers(service: dict[str, Any]) -> Iterator[tuple[PathKey, dict[str, Any]]]:
    """Every server of a service, in its pools too, with its path below the service."""
    groups: list[tuple[PathKey, Any]] = [(("servers",), service.get("servers")), (("backup",), service.get("backup"))]
    for pool_name, pool in _mapping(service.get("pools")).items():
        pool = _mapping(pool)
        groups += [(("pools", pool_name, "servers"), pool.get("servers")), (("pools", pool_name, "backup"), pool.get("backup"))]
    for group, servers in groups:
        if isinstance(servers, list):
            for index, server in enumerate(servers):
                yield group + (index,), _mapping(server)


def _admin_listen(data: dict[str, Any]) -> HostPort | None:
    admin = data.get("admin")
    if not isinstance(admin, dict):
        return None
    if "listen" not in admin:
        return AdminConfig.model_fields["listen"].default
    section = valid(AdminConfig, {"listen": admin["listen"]})
    return section.listen if section is not None else None


def span_checks(data: dict[str, Any], where: Locations, local_hosts: Collection[str] = ()) -> list[Problem]:
    """`local_hosts`: this host's own addresses, which a 0.0.0.0 or :: listen takes too
    (given by `medlb check` and `medlb run`, which read the host; config reads none)."""
    problems: list[Problem] = []

    def add(path: PathKey, message: str) -> None:
        problems.append(where.problem(path, message))

    services = written_services(data)
    _names(services, where, add)
    own = _listen_conflicts(services, _admin_listen(data), where, add)
    _loops(services, own, frozenset(local_hosts), where, add)
    return problems


def _names(services: list[dict[str, Any]], where: Locations, add: Add) -> None:
    """Service names are unique in the file, server names within their service."""
    seen: dict[str, int] = {}
    for s_index, service in enumerate(services):
        name = service.get("name")
        if isinstance(name, str):
            if name in seen:
                add(("services", s_index, "name"), f"service name {name!r} is already used by "
                                                   f"{where.show(('services', seen[name]))}")
            seen.setdefault(name, s_index)
        server_names: dict[str, PathKey] = {}
        for path, server in written_servers(service):
            server_name = server.get("name")
            if not isinstance(server_name, str):
                continue
            if server_name in server_names:
                add(("services", s_index) + path + ("name",), f"server name {server_name!r} is already used at "
                                                              f"{where.show(server_names[server_name])}; names are "
                                                              "unique within a service")
            server_names.setdefault(server_name, ("services", s_index) + path)


#: A listen address of medlb's own sockets and where the file gives it.
OwnAddress = tuple[HostPort, PathKey]


def _listen_conflicts(services: list[dict[str, Any]], admin: HostPort | None, where: Locations,
                      add: Add) -> list[OwnAddress]:
    """A port used twice (by two services, one service twice, or a service and the admin
    API). Returns the addresses medlb's own sockets listen on."""
    bound: list[tuple[HostPort, int, int]] = []
    own: list[OwnAddress] = []
    for s_index, service in enumerate(services):
        relayed = service.get("mode", "tcp") not in L4_MODES
        for l_index, addresses in enumerate(written_listen(service)):
            path: PathKey = ("services", s_index, "listen", l_index)
            for address in addresses:
                if admin is not None and listen_overlaps(address, admin):
                    add(path, f"{address} overlaps the admin API's listen address {admin}")
                for other, other_s, other_l in bound:
                    if listen_overlaps(address, other):
                        owner = "this service" if other_s == s_index else where.show(("services", other_s))
                        add(path, f"{address} is already a listen address of {owner} (listen[{other_l}])")
                bound.append((address, s_index, l_index))
                if relayed:
                    own.append((address, path))
    return own


def _is_local(host: str, local_hosts: frozenset[str]) -> bool:
    """A host that is this machine: loopback, 0.0.0.0 / :: (which a connect() reaches
    on loopback), or one of the addresses of its interfaces."""
    if host == "localhost" or host in local_hosts:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _reaches(server_host: str, listen_host: str, local_hosts: frozenset[str]) -> bool:
    """Whether a connection to `server_host` lands on a socket listening on `listen_host`
    (same port). Names other than localhost are not resolved: `check` reads no DNS."""
    if listen_host == "::":
        return _is_local(server_host, local_hosts)
    if listen_host == "0.0.0.0":
        return _is_local(server_host, local_hosts) and ":" not in server_host
    if server_host == listen_host:
        return True
    if server_host in ("localhost", "0.0.0.0", "::"):
        return listen_host in ("127.0.0.1", "::1")
    return False


def _loops(services: list[dict[str, Any]], own: list[OwnAddress], local_hosts: frozenset[str], where: Locations,
           add: Add) -> None:
    """A layer 7 server that is one of medlb's own listen addresses sends every
    connection back into medlb, which opens another, until descriptors run out (7,652
    connections in 6 s). A server without a port is called on the port the client
    called, so on a multi-port service each of its ports counts."""
    for s_index, service in enumerate(services):
        if service.get("mode", "tcp") in L4_MODES:
            continue  # the kernel's servers are other hosts (refused otherwise)
        ports = sorted({address.port for addresses in written_listen(service) for address in addresses})
        for path, server in written_servers(service):
            address = _parsed(parse_server_address, server.get("address"))
            if address is None:
                continue
            for port in [address.port] if address.port is not None else ports:
                hit = next((listen_path for listen, listen_path in own
                            if listen.port == port and _reaches(address.host, listen.host, local_hosts)), None)
                if hit is None:
                    continue
                how = "" if address.port is not None else f"without a port it is called on the client's port ({port}): "
                add(("services", s_index) + path + ("address",),
                    f"{how}{address.host}:{port} is medlb's own listen address ({where.show(hit)}); every connection "
                    "would loop back into medlb and open another until it runs out of descriptors")
                break
