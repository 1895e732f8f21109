"""The JSON shapes of services and servers, shared by the API and `medlb ctl`."""

from __future__ import annotations

from typing import Any

from medlb.runtime import Server, Service
from medlb.runtime.describe import describe_change
from medlb.runtime.status import service_counts, server_status


def server_view(server: Server, service: Service) -> dict[str, Any]:
    last = server.last_check
    status, status_text = server_status(service, server)
    return {
        "name": server.name,
        "address": server.display_address(),
        "pool": server.pool,
        "backup": server.backup,
        "state": server.state,
        "health": server.health,
        "available": server.available,
        "status": status,
        "status_text": status_text,
        "weight": server.weight,
        "active_connections": server.active,
        "total_connections": server.total,
        "bytes_to_server": server.bytes_to_server,
        "bytes_to_client": server.bytes_to_client,
        "connect_failures": server.connect_failures,
        "health_reason": server.health_reason,
        "health_changed_at": server.health_changed_at,
        "health_changes": server.health_changes,
        "state_changed_at": server.state_changed_at,
        "state_changed_by": server.state_changed_by,
        "last_change": None if server.last_change is None else {
            "kind": server.last_change.kind, "text": describe_change(server.last_change, len(service.pools) > 1),
            "who": server.last_change.who, "at": server.last_change_at},
        "last_check": None if last is None else {
            "ok": last.ok, "reason": last.reason, "latency": round(last.latency, 6), "at": last.at},
        **({"ae_title": server.ae_title} if server.ae_title else {}),
        **({"messages": server.messages, "in_flight": server.in_flight} if server.messages or server.in_flight else {}),
    }


SECRET_KEYS = frozenset({"token", "password_hash", "password", "key_password"})
#: What a secret is shown as, in the config as data and in the file as written.
MASK = "********"


def masked_config(config: Any) -> dict[str, Any]:
    """The config as plain data with every secret replaced by '********'."""

    def clean(value: Any, key: str = "") -> Any:
        if key in SECRET_KEYS and value is not None:
            return MASK
        if isinstance(value, dict):
            return {k: clean(v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return str(value)

    return clean(config.model_dump(mode="python", exclude_defaults=False))  # type: ignore[no-any-return]


def dicom_view(service: Service) -> dict[str, Any]:
    """Routing as configured, and association counters: AE titles and codes, no data."""
    config = service.dicom_config
    stats = service.dicom
    assert stats is not None
    return {
        "ae_title": config.ae_title,
        "allowed_calling_aes": config.allowed_calling_aes,
        "routes": [route.model_dump(exclude_none=True) for route in config.routes],
        "unrouted": config.unrouted,
        "active_associations": stats.active,
        "total_associations": stats.total,
        "by_calling_ae": {ae: {"active": c.active, "total": c.total} for ae, c in stats.by_calling_ae.items()},
        "by_called_ae": {ae: {"active": c.active, "total": c.total} for ae, c in stats.by_called_ae.items()},
        "rejects": dict(stats.rejects),
        "last_rejects": stats.last_rejects.newest_first(),
        "aborts": dict(stats.aborts),
    }


def service_view(service: Service) -> dict[str, Any]:
    config = service.config
    servers = list(service.servers())
    return {
        "name": service.name,
        "mode": service.mode,
        "listen": [str(address) for address in config.addresses],
        "scheduler": config.scheduler,
        "persistence": config.persistence.type,
        "health_check": config.health.type,
        "failback": config.failback,
        "on_halt": config.on_halt,
        "active_pool": service.active_pool,
        "failed_over": service.pools["default"].failed_over,
        "active_connections": service.active,
        "total_connections": service.total,
        "refused_connections": service.refused,
        "no_server": service.no_server,
        "servers_up": sum(1 for s in servers if s.available),
        "servers_total": len(servers),
        **{f"servers_{count}": value for count, value in service_counts(service).items()},
        "bytes_total": sum(s.bytes_to_server + s.bytes_to_client for s in servers),
        "pools": {
            name: {"active": pool.active, "failed_over": pool.failed_over,
                   "servers": [s.name for s in pool.primary], "backup": [s.name for s in pool.backup]}
            for name, pool in service.pools.items()
        },
        "servers": [server_view(server, service) for server in service.servers()],
        **({"mllp": mllp_view(service)} if service.mllp_stats is not None else {}),
        **({"dicom": dicom_view(service)} if service.dicom is not None else {}),
        **({"tls": tls_view(service)} if service.tls is not None else {}),
        **({"http": http_view(service)} if service.http_stats is not None else {}),
    }


def tls_view(service: Service) -> dict[str, Any]:
    tls = service.tls
    return {
        "policy": tls.config.policy,
        "verify_client": tls.config.verify_client,
        "handshakes": tls.stats.handshakes,
        "handshake_failures": dict(tls.stats.failures),
        "certificates": [{"cert": c.cert, "names": c.names, "not_after": c.not_after.isoformat(),
                          "days_left": round(c.days_left(), 2)} for c in tls.certificates],
    }


def http_view(service: Service) -> dict[str, Any]:
    stats = service.http_stats
    assert stats is not None
    by_class: dict[str, int] = {}
    for (_, status_class), count in stats.requests.items():
        by_class[status_class] = by_class.get(status_class, 0) + count
    return {"requests": by_class, "errors": dict(stats.errors), "last_errors": stats.last_errors.newest_first(),
            "in_flight": stats.in_flight}


def mllp_view(service: Service) -> dict[str, Any]:
    stats = service.mllp_stats
    assert stats is not None
    acks: dict[str, int] = {}
    for (_, code), count in stats.acks.items():
        acks[code] = acks.get(code, 0) + count
    return {
        "messages": sum(stats.messages.values()),
        "acks": acks,
        "negative_acks_sent": dict(stats.naks),
        "negative_acks_by_code": by_code(stats.nak_codes),
        "last_failures": stats.last_failures.newest_first(),
        "retries": stats.retries,
        "mismatched_acks": stats.mismatched_acks,
        "oversized": stats.oversized,
        "partial_frame_bytes": stats.partial_frame_bytes,
        "in_flight": stats.in_flight,
        "queued": stats.queued - stats.in_flight,
    }


def by_code(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """{(code, reason): n} as {code: {reason: n}}."""
    grouped: dict[str, dict[str, int]] = {}
    for (code, reason), count in sorted(counts.items()):
        grouped.setdefault(code, {})[reason] = count
    return grouped
