"""Prometheus metrics, read from the runtime at scrape time.

The data path only bumps plain integers on Server and Service objects; this collector
turns them into metric families when /metrics is scraped, so there is no metrics
library call per connection or per byte. Labels are names medlb's config gives
(service, pool, server) and, for DICOM, AE titles (at most 256 per service and
label, the rest as "other") and reason codes: never client addresses or message
contents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily,
                                    Metric)

from medlb import __version__
from medlb.ha.supervisor import ROLES as HA_ROLES
from medlb.runtime import Service
from medlb.runtime.events import STATES

if TYPE_CHECKING:
    from medlb.admin.console import Console
    from medlb.admin.sessions import Sessions
    from medlb.control import Control
    from medlb.tls import CertInfo


#: MSA-1 codes by which a server refuses a message (original and enhanced mode).
REFUSING_ACK_CODES = frozenset({"AE", "AR", "CE", "CR"})


class RuntimeCollector:
    def __init__(self, control: "Control", console: "Console", kernel: Mapping[str, Any] | None = None):
        self.control = control
        self.console = console
        #: The layer 4 services' kernel counters (Control.l4_counters), read before the scrape.
        self.kernel = kernel

    def collect(self) -> Iterator[Metric]:
        services = self.control.services.values()
        server_labels = ["service", "pool", "server", "backup"]

        up = GaugeMetricFamily("medlb_server_up", "1 if the server's health is up", labels=server_labels)
        available = GaugeMetricFamily("medlb_server_available",
                                      "1 if the server takes new work (online and up)", labels=server_labels)
        state = GaugeMetricFamily("medlb_server_state", "1 for the server's operator state",
                                  labels=server_labels + ["state"])
        weight = GaugeMetricFamily("medlb_server_weight", "Configured weight", labels=server_labels)
        active = GaugeMetricFamily("medlb_server_active_connections", "Connections open now", labels=server_labels)
        total = CounterMetricFamily("medlb_server_connections", "Connections relayed", labels=server_labels)
        traffic = CounterMetricFamily("medlb_server_bytes", "Bytes relayed", labels=server_labels + ["direction"])
        failures = CounterMetricFamily("medlb_server_connect_failures", "Failed connects to the server",
                                       labels=server_labels)
        latency = GaugeMetricFamily("medlb_health_check_duration_seconds", "Duration of the last health check",
                                    labels=server_labels)
        checks = CounterMetricFamily("medlb_health_checks", "Health checks by result",
                                     labels=server_labels + ["result"])
        changes = CounterMetricFamily("medlb_server_health_changes", "Times the server's health flipped",
                                      labels=server_labels)
        last_ok = GaugeMetricFamily("medlb_health_check_last_ok", "1 if the last health check passed",
                                    labels=server_labels)

        svc_active = GaugeMetricFamily("medlb_service_active_connections", "Client connections open now",
                                       labels=["service", "mode"])
        svc_total = CounterMetricFamily("medlb_service_connections", "Client connections accepted",
                                        labels=["service", "mode"])
        svc_refused = CounterMetricFamily("medlb_service_refused_connections",
                                          "Connections refused at max_connections", labels=["service", "mode"])
        svc_fd_refused = CounterMetricFamily("medlb_service_descriptor_refused_connections",
                                             "Connections refused because the process holding them had reached "
                                             "its connection ceiling (derived from its open-file limit)",
                                             labels=["service", "mode"])
        svc_no_server = CounterMetricFamily("medlb_service_no_server",
                                            "Connections closed because no server could take them",
                                            labels=["service", "mode"])
        pool_active = GaugeMetricFamily("medlb_pool_active_tier", "1 for the tier that takes new work",
                                        labels=["service", "pool", "tier"])

        for service in services:
            svc = [service.name, service.mode]
            svc_active.add_metric(svc, service.active)
            svc_total.add_metric(svc, service.total)
            svc_refused.add_metric(svc, service.refused)
            svc_fd_refused.add_metric(svc, service.counters.descriptor_refused)
            svc_no_server.add_metric(svc, service.no_server)
            for pool in service.pools.values():
                for tier in ("primary", "backup", "none"):
                    pool_active.add_metric([service.name, pool.name, tier], 1 if pool.active == tier else 0)
            for server in service.servers():
                labels = [service.name, server.pool, server.name, str(server.backup).lower()]
                up.add_metric(labels, 1 if server.health == "up" else 0)
                available.add_metric(labels, 1 if server.available else 0)
                for name in STATES:
                    state.add_metric(labels + [name], 1 if server.state == name else 0)
                weight.add_metric(labels, server.weight)
                active.add_metric(labels, server.active)
                total.add_metric(labels, server.total)
                traffic.add_metric(labels + ["to_server"], server.bytes_to_server)
                traffic.add_metric(labels + ["to_client"], server.bytes_to_client)
                failures.add_metric(labels, server.connect_failures)
                checks.add_metric(labels + ["ok"], server.checks_ok)
                checks.add_metric(labels + ["failed"], server.checks_failed)
                changes.add_metric(labels, server.health_changes)
                if server.last_check is not None:
                    latency.add_metric(labels, server.last_check.latency)
                    last_ok.add_metric(labels, 1 if server.last_check.ok else 0)

        yield from _mllp_metrics(services)
        yield from _dicom_metrics(services)
        yield from _tls_metrics(services)
        yield from _http_metrics(services)
        yield from _l4_metrics(self.kernel, self.control.services)

        yield from _worker_metrics(self.control.worker_views())
        yield from _login_metrics(self.console.sessions)
        yield from _admin_certificate_metrics(self.console.certificate)
        yield _check_error_metrics(self.control.health_errors)

        reloads = CounterMetricFamily("medlb_reloads", "Config reloads by result", labels=["result"])
        for result, count in self.control.reloads.items():
            reloads.add_metric([result], count)
        info = InfoMetricFamily("medlb_build", "medlb version")
        info.add_metric([], {"version": __version__})
        yield from (up, available, state, weight, active, total, traffic, failures, latency, checks, changes, last_ok,
                    svc_active, svc_total, svc_refused, svc_fd_refused, svc_no_server, pool_active, reloads, info)


def _check_error_metrics(found: Mapping[tuple[str, str, str], int]) -> Metric:
    """Checks medlb could not make (out of descriptors...): its own errors, which
    leave the server's health alone, so they need an alert of their own."""
    errors = CounterMetricFamily("medlb_check_errors", "Health checks medlb could not make for a reason of its "
                                 "own host, by errno name (the server's health is left as it was)",
                                 labels=["service", "server", "reason"])
    for (service, server, reason), count in sorted(found.items()):
        errors.add_metric([service, server, reason], count)
    return errors


def _login_metrics(sessions: "Sessions") -> Iterator[Metric]:
    """Web page logins: a burst of guesses shows as busy and locked refusals, and the
    password checks it cost (bounded by admin.password_checks and the lock-out)."""
    checks = CounterMetricFamily("medlb_admin_password_checks", "Password checks (scrypt) run for logins")
    checks.add_metric([], sessions.password_checks)
    logins = CounterMetricFamily("medlb_admin_logins", "Web page logins by result: ok, wrong (password or "
                                 "name), locked (refused while locked out), busy (refused unchecked)",
                                 labels=["result"])
    for result in ("ok", "wrong", "locked", "busy"):
        logins.add_metric([result], sessions.logins[result])
    yield from (checks, logins)


def _admin_certificate_metrics(certificate: "CertInfo | None") -> Iterator[Metric]:
    """The certificate the admin listener serves (read when it started): when it
    expires, the web page, `medlb ctl` and this very scrape stop working."""
    if certificate is None:
        return
    days = GaugeMetricFamily("medlb_admin_certificate_days_left",
                             "Days until the admin listener's certificate expires", labels=["cert"])
    days.add_metric([certificate.cert], certificate.days_left())
    yield days


def _worker_metrics(workers: list[dict[str, Any]] | None) -> Iterator[Metric]:
    """Data-plane processes (workers: N): alert on a worker down or restarting.
    `workers` holds each process's view, None for the data plane in this process."""
    count = GaugeMetricFamily("medlb_workers", "Data-plane worker processes configured (1: in this process)")
    count.add_metric([], len(workers) if workers is not None else 1)
    yield count
    if workers is None:
        return
    up = GaugeMetricFamily("medlb_worker_up", "1 if the worker process is running", labels=["worker"])
    restarts = CounterMetricFamily("medlb_worker_restarts", "Times the worker was started again after it exited",
                                   labels=["worker"])
    for worker in workers:
        up.add_metric([str(worker["index"])], 1 if worker["alive"] else 0)
        restarts.add_metric([str(worker["index"])], worker["restarts"])
    yield from (up, restarts)


def _mllp_metrics(services: Iterable[Service]) -> Iterator[Metric]:
    """HL7 counters: types, ACK codes and reasons only; never message content or keys."""
    messages = CounterMetricFamily("medlb_mllp_messages", "HL7 messages sent to servers, by MSH-9 type",
                                   labels=["service", "server", "type"])
    acks = CounterMetricFamily("medlb_mllp_acks", "ACKs relayed to senders, by MSA-1 code",
                               labels=["service", "server", "code"])
    naks = CounterMetricFamily("medlb_mllp_negative_acks_sent",
                               "Negative ACKs medlb itself sent to senders, by reason", labels=["service", "reason"])
    retries = CounterMetricFamily("medlb_mllp_retries", "Messages sent again after a server failed to ACK",
                                  labels=["service"])
    mismatched = CounterMetricFamily("medlb_mllp_mismatched_acks",
                                     "Answers not relayed: MSA-2 matched no message in flight", labels=["service"])
    oversized = CounterMetricFamily("medlb_mllp_oversized_messages", "Frames over max_message_size",
                                    labels=["service"])
    unreadable = CounterMetricFamily("medlb_mllp_unreadable_messages", "Frames without a readable MSH",
                                     labels=["service"])
    junk = CounterMetricFamily("medlb_mllp_junk_bytes", "Bytes received outside MLLP frames", labels=["service"])
    in_flight = GaugeMetricFamily("medlb_mllp_in_flight", "Messages sent and waiting for their ACK",
                                  labels=["service"])
    queued = GaugeMetricFamily("medlb_mllp_queued", "Messages received and not yet sent", labels=["service"])
    partial = GaugeMetricFamily("medlb_mllp_partial_frame_bytes",
                                "Bytes of unfinished messages held (see mllp.partial_frames_budget)", labels=["service"])
    latency = HistogramMetricFamily("medlb_mllp_ack_latency_seconds", "From sending a message to its ACK",
                                    labels=["service"])
    refused = CounterMetricFamily("medlb_mllp_refused_messages", "HL7 messages refused: answered AE or AR by "
                                  "medlb itself, or AE, AR, CE or CR by the receiving server (from 0, for alerts)",
                                  labels=["service", "refused_by"])
    found = False
    for service in services:
        stats = service.mllp_stats
        if stats is None:
            continue
        found = True
        name = service.name
        for (kind, server), count in stats.messages.items():
            messages.add_metric([name, server, kind], count)
        for (server, code), count in stats.acks.items():
            acks.add_metric([name, server, code], count)
        for reason, count in stats.naks.items():
            naks.add_metric([name, reason], count)
        refused.add_metric([name, "medlb"], sum(stats.naks.values()))
        refused.add_metric([name, "server"], sum(count for (_, code), count in stats.acks.items()
                                                 if code in REFUSING_ACK_CODES))
        retries.add_metric([name], stats.retries)
        mismatched.add_metric([name], stats.mismatched_acks)
        oversized.add_metric([name], stats.oversized)
        unreadable.add_metric([name], stats.unreadable)
        junk.add_metric([name], stats.junk_bytes)
        in_flight.add_metric([name], stats.in_flight)
        queued.add_metric([name], stats.queued - stats.in_flight)
        partial.add_metric([name], stats.partial_frame_bytes)
        histogram = stats.ack_latency
        latency.add_metric([name], list(histogram.cumulative()), histogram.sum)
    if found:
        yield from (messages, acks, naks, refused, retries, mismatched, oversized, unreadable, junk, in_flight,
                    queued, partial, latency)


def _dicom_metrics(services: Iterable[Service]) -> Iterator[Metric]:
    """Mode dicom: associations (per service, calling AE, called AE), rejects, aborts,
    association durations; and the C-ECHO round trips of dicom-echo checks."""
    svc = ["service"]
    total = CounterMetricFamily("medlb_dicom_associations", "Associations accepted and relayed", labels=svc)
    active = GaugeMetricFamily("medlb_dicom_active_associations", "Associations open now", labels=svc)
    by = {}
    for side in ("calling_ae", "called_ae"):
        by[side] = (
            CounterMetricFamily(f"medlb_dicom_associations_by_{side}", f"Associations by {side.replace('_', ' ')}",
                                labels=svc + [side]),
            GaugeMetricFamily(f"medlb_dicom_active_associations_by_{side}",
                              f"Associations open now by {side.replace('_', ' ')}", labels=svc + [side]))
    rejects = CounterMetricFamily("medlb_dicom_rejects", "Associations refused (RJ, A-ABORT or closed) by reason",
                                  labels=svc + ["reason"])
    aborts = CounterMetricFamily("medlb_dicom_aborts", "Associations medlb ended with an A-ABORT, by cause",
                                 labels=svc + ["cause"])
    duration = HistogramMetricFamily("medlb_dicom_association_duration_seconds",
                                     "How long associations lasted", labels=svc)
    echo = HistogramMetricFamily("medlb_dicom_echo_seconds", "C-ECHO round trip of dicom-echo checks",
                                 labels=["service", "pool", "server", "backup"])
    for service in services:
        for server in service.servers():
            if server.echo_latency is not None:
                histogram = server.echo_latency
                echo.add_metric([service.name, server.pool, server.name, str(server.backup).lower()],
                                list(histogram.cumulative()), histogram.sum)
        stats = service.dicom
        if stats is None:
            continue
        total.add_metric([service.name], stats.total)
        active.add_metric([service.name], stats.active)
        for side, table in (("calling_ae", stats.by_calling_ae), ("called_ae", stats.by_called_ae)):
            for title, count in table.items():
                by[side][0].add_metric([service.name, title], count.total)
                by[side][1].add_metric([service.name, title], count.active)
        for reason, count in stats.rejects.items():
            rejects.add_metric([service.name, reason], count)
        for cause, count in stats.aborts.items():
            aborts.add_metric([service.name, cause], count)
        duration.add_metric([service.name], list(stats.duration.cumulative()), stats.duration.sum)
    yield total
    yield active
    for pair in by.values():
        yield from pair
    yield from (rejects, aborts, duration, echo)


def _tls_metrics(services: Iterable[Service]) -> Iterator[Metric]:
    handshakes = CounterMetricFamily("medlb_tls_handshakes", "TLS handshakes completed", labels=["service"])
    failures = CounterMetricFamily("medlb_tls_handshake_failures", "TLS handshakes that failed, by reason",
                                   labels=["service", "reason"])
    days = GaugeMetricFamily("medlb_tls_certificate_days_left", "Days until the certificate expires",
                             labels=["service", "cert"])
    found = False
    for service in services:
        tls = service.tls
        if tls is None:
            continue
        found = True
        handshakes.add_metric([service.name], tls.stats.handshakes)
        for reason, count in tls.stats.failures.items():
            failures.add_metric([service.name, reason], count)
        for cert in tls.certificates:
            days.add_metric([service.name, cert.cert], cert.days_left())
    if found:
        yield from (handshakes, failures, days)


def _http_metrics(services: Iterable[Service]) -> Iterator[Metric]:
    requests = CounterMetricFamily("medlb_http_requests", "HTTP requests by server and status class "
                                   "(server \"\" for answers medlb made itself)", labels=["service", "server", "code"])
    errors = CounterMetricFamily("medlb_http_errors", "Answers or closes medlb made itself, by reason",
                                 labels=["service", "reason"])
    latency = HistogramMetricFamily("medlb_http_response_seconds",
                                    "From the request head to the server's response head", labels=["service", "server"])
    in_flight = GaugeMetricFamily("medlb_http_in_flight", "Requests being served now", labels=["service"])
    found = False
    for service in services:
        stats = service.http_stats
        if stats is None:
            continue
        found = True
        for (server, code), count in stats.requests.items():
            requests.add_metric([service.name, server, code], count)
        for reason, count in stats.errors.items():
            errors.add_metric([service.name, reason], count)
        for server, histogram in stats.latency.items():
            latency.add_metric([service.name, server], list(histogram.cumulative()), histogram.sum)
        in_flight.add_metric([service.name], stats.in_flight)
    if found:
        yield from (requests, errors, latency, in_flight)


def _l4_metrics(kernel: Mapping[str, Any] | None, services: Mapping[str, Service]) -> Iterator[Metric]:
    """What the kernel counts for l4-dr and l4-nat services, per server: packets and
    bytes (DR: client to server only, the replies never cross the balancer; NAT: both
    ways), new flows, and NAT's connections in conntrack. DR's pins are not counted per
    scrape (listing 100,000 takes seconds; `medlb ctl l4` shows them). The layer 7
    names carry the same numbers where they mean the same: medlb_server_connections
    (new flows), medlb_server_bytes{direction="to_server"}, medlb_service_no_server
    (packets dropped)."""
    if kernel is None or (not kernel["services"] and kernel["error"] is None):
        return
    labels = ["service", "pool", "server", "backup"]
    packets = CounterMetricFamily("medlb_l4_server_packets", "Packets the kernel forwarded on the server's flows "
                                  "(l4-dr: client to server; l4-nat: both ways)", labels=labels)
    traffic = CounterMetricFamily("medlb_l4_server_bytes", "Bytes the kernel forwarded on the server's flows "
                                  "(l4-dr: client to server; l4-nat: both ways)", labels=labels)
    new_flows = CounterMetricFamily("medlb_l4_server_new_flows", "New flows (TCP connections) the kernel sent "
                                    "to the server", labels=labels)
    flows = GaugeMetricFamily("medlb_l4_server_flows", "Connections conntrack holds for the server (l4-nat)",
                              labels=labels)
    no_server = CounterMetricFamily("medlb_l4_no_server_packets", "Packets of new flows the kernel dropped "
                                    "because no server takes new flows", labels=["service", "mode"])
    error = GaugeMetricFamily("medlb_l4_kernel_error", "1 while the last attempt to program the kernel failed "
                              "(the log says why: kernel_apply_failed, kernel_update_failed)")
    error.add_metric([], 0 if kernel["error"] is None else 1)
    for name, counted in sorted(kernel["services"].items()):
        service = services.get(name)
        for server_name, numbers in counted["servers"].items():
            server = service.server(server_name) if service is not None else None
            server_labels = [name, server.pool if server else "", server_name,
                             str(server.backup if server else False).lower()]
            packets.add_metric(server_labels, numbers.get("packets", 0))
            traffic.add_metric(server_labels, numbers.get("bytes", 0))
            new_flows.add_metric(server_labels, numbers.get("new_flows", 0))
            if numbers.get("flows") is not None:
                flows.add_metric(server_labels, numbers["flows"])
        no_server.add_metric([name, counted["mode"]], counted["no_server"].get("packets", 0))
    yield from (packets, traffic, new_flows, flows, no_server, error)


def _ha_metrics(ha: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The pair: 1 for the role keepalived last reported for this node, 0 for the others."""
    if ha is None:
        return
    role = GaugeMetricFamily("medlb_ha_role", "1 for this node's role in the pair (MASTER holds the VIPs)",
                             labels=["node", "role"])
    for name in HA_ROLES:
        role.add_metric([ha["node"], name], 1 if ha["role"] == name else 0)
    yield role
    peer = ha.get("peer", {})
    if "up" in peer:  # the sync channel watches the peer
        up = GaugeMetricFamily("medlb_ha_peer_up", "1 while the peer node answers on the sync channel",
                               labels=["node", "peer"])
        up.add_metric([ha["node"], peer["name"]], 1 if peer["up"] else 0)
        in_sync = GaugeMetricFamily("medlb_ha_config_in_sync",
                                    "1 while the peer runs the same config (generation and hash) as this node",
                                    labels=["node", "peer"])
        in_sync.add_metric([ha["node"], peer["name"]], 1 if peer["config_in_sync"] else 0)
        yield from (up, in_sync)
    if "decisions_in_sync" in peer:
        decisions = GaugeMetricFamily("medlb_ha_decisions_in_sync",
                                      "1 while the peer has this node's operator decisions and routes alike",
                                      labels=["node", "peer"])
        decisions.add_metric([ha["node"], peer["name"]], 1 if peer["decisions_in_sync"] else 0)
        yield decisions


class _HaCollector:
    def __init__(self, ha: Mapping[str, Any] | None):
        self.ha = ha

    def collect(self) -> Iterator[Metric]:
        yield from _ha_metrics(self.ha)


def render(control: "Control", console: "Console", kernel: Mapping[str, Any] | None = None,
           ha: Mapping[str, Any] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(control, console, kernel))  # type: ignore[arg-type]
    registry.register(_HaCollector(ha))  # type: ignore[arg-type]
    return generate_latest(registry)
