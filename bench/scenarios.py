"""The benchmark scenarios. Each returns Rows; `quick` makes every run tiny (for tests)."""

from __future__ import annotations

import json
import re
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.common import (LOOPBACK, ONE_MB, PYTHON, ROOT, Medlb, Process, Row, alternate, env_with_src,
                          free_ports, haproxy, haproxy_available, nginx_config, rss_bytes, wait_port, workdir)
from bench.l4 import l4_dr, l4_nat


def _tcp_service(port: int, backend: int, servers: int = 1, **extra: object) -> dict:
    """`servers` entries all pointing at the one backend: more than one makes the
    scheduler choose (round robin, the default), as HAProxy's does with as many."""
    return {"name": "bench", "mode": "tcp", "listen": [f"{LOOPBACK}:{port}"],
            "health": {"type": "none"}, "limits": {"max_connections": 9000, "idle_timeout": "5m"},
            "servers": [{"name": f"b{i}", "address": f"{LOOPBACK}:{backend}"} for i in range(1, servers + 1)],
            **extra}


def _haproxy_tcp(port: int, backend: int, mode: str = "tcp", threads: int = 1, servers: int = 1) -> str:
    lines = "\n".join(f"    server b{i} {LOOPBACK}:{backend}" for i in range(1, servers + 1))
    return f"""global
    maxconn 9000
    nbthread {threads}
defaults
    mode {mode}
    timeout connect 3s
    timeout client 5m
    timeout server 5m
frontend f
    bind {LOOPBACK}:{port}
    default_backend b
backend b
    balance roundrobin
{lines}
"""


# --- HL7 ---------------------------------------------------------------------------------


#: `mllp.pipeline` of the second HL7 rows: messages in flight per engine connection.
HL7_PIPELINE = 8


def hl7(quick: bool) -> list[Row]:
    """One message at a time per engine connection (the default), then pipelined."""
    return _hl7_rows(quick, 1) + _hl7_rows(quick, HL7_PIPELINE)


def _hl7_rows(quick: bool, pipeline: int) -> list[Row]:
    vip, engine_port = free_ports(2)
    seconds, pairs = (0.5, 1) if quick else (3.0, 5)
    directory = workdir("hl7")
    service = {"name": "adt", "mode": "mllp", "listen": [f"{LOOPBACK}:{vip}"], "health": {"type": "none"},
               "mllp": {"server_connections": 16, **({"pipeline": pipeline} if pipeline > 1 else {})},
               "servers": [{"name": "e1", "address": f"{LOOPBACK}:{engine_port}"}]}

    def load(port: int) -> dict:
        out = subprocess.run([PYTHON, str(ROOT / "bench/peers/hl7_load.py"), str(port), "--senders", "10",
                              "--seconds", str(seconds)], capture_output=True, text=True, timeout=120,
                             env=env_with_src(), check=True)
        return json.loads(out.stdout)

    samples: dict[str, list[dict]] = {"medlb": [], "direct": []}

    def through_medlb() -> float:
        result = load(vip)
        samples["medlb"].append(result)
        return result["rate"]

    def direct() -> float:
        result = load(engine_port)
        samples["direct"].append(result)
        return result["rate"]

    engine = Process([PYTHON, str(ROOT / "bench/peers/hl7_engine.py"), str(engine_port)], ready_port=engine_port,
                     env=env_with_src())
    relay_rows = []
    with engine, Medlb([service], directory):
        wait_port(vip)
        load(vip)  # warm up: links open, code paths hot
        medlb_rate, direct_rate, ratio, results = alternate(pairs, through_medlb, direct)
        if pipeline == 1 and haproxy_available():
            relay_rows.append(_hl7_against_a_relay(pairs, load, vip, engine_port, directory))
    p50 = [m["p50_ms"] - d["p50_ms"] for m, d in zip(samples["medlb"], samples["direct"])]
    p99 = [m["p99_ms"] - d["p99_ms"] for m, d in zip(samples["medlb"], samples["direct"])]
    added50, added99 = sorted(p50)[len(p50) // 2], sorted(p99)[len(p99) // 2]
    direct99 = sorted(d["p99_ms"] for d in samples["direct"])[len(samples["direct"]) // 2]
    how = f", pipeline: {pipeline}" if pipeline > 1 else ""
    return [
        Row(f"HL7 messages/s with ACKs, 10 senders{how}", "msg/s", round(medlb_rate), round(direct_rate), "direct",
            round(ratio, 3), ">= 0.6", pairs=results),
        Row(f"HL7 latency added per message, p99{how}", "ms", round(added99, 3), round(direct99, 3), "direct p99", None,
            "p99 <= 1 ms", note=f"medlb column: p99 added by medlb; added p50 {added50:.3f} ms"),
    ] + relay_rows


def _hl7_against_a_relay(pairs: int, load, vip: int, engine_port: int, directory: Path) -> Row:  # type: ignore[no-untyped-def]
    """medlb's message-level mllp (at `vip`) against HAProxy relaying the same engine's
    port as bytes (mode tcp, no message read): what a second hop costs any balancer on
    these cores, next to what medlb's reading of each message costs on top of it. Its
    runs are not the latency rows' samples."""
    port = free_ports(1)[0]
    with haproxy(_haproxy_tcp(port, engine_port), directory, port):
        load(port)
        medlb, peer, ratio, results = alternate(pairs, lambda: load(vip)["rate"], lambda: load(port)["rate"])
    return Row("HL7 messages/s, 10 senders, against a relay that reads no message", "msg/s", round(medlb),
               round(peer), "HAProxy mode tcp", round(ratio, 3), "report", pairs=results)


# --- TCP -----------------------------------------------------------------------------------


def _iperf(port: int, streams: int, seconds: float) -> float:
    seconds = max(1, round(seconds))  # iperf3 takes whole seconds
    error = ""
    for _ in range(5):
        out = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(port), "-t", str(seconds), "-P", str(streams),
                              "-J"], capture_output=True, text=True, timeout=seconds + 30)
        data = json.loads(out.stdout or "{}")
        if "sum_received" in data.get("end", {}):
            return data["end"]["sum_received"]["bits_per_second"] / 1e9
        # The iperf3 server runs one test at a time and may still be closing the last.
        error = data.get("error", out.stderr.strip())
        time.sleep(0.5)
    raise RuntimeError(f"iperf3 failed: {error}")


def tcp_bulk(quick: bool) -> list[Row]:
    if not (haproxy_available() and shutil.which("iperf3")):
        return [Row("TCP bulk throughput", "Gbit/s", None, None, "HAProxy", None, ">= 1.0",
                    note="haproxy or iperf3 missing (make bench installs them)")]
    backend = free_ports(1)[0]
    seconds, pairs = (0.5, 1) if quick else (2.0, 3)
    directory = workdir("bulk")
    rows = []
    with Process(["iperf3", "-s", "-p", str(backend)], ready_port=backend):
        for processes in PROCESSES:
            vip, hap = free_ports(2)
            with Medlb([_tcp_service(vip, backend)], directory, workers=processes), \
                    haproxy(_haproxy_tcp(hap, backend, threads=processes), directory, hap):
                wait_port(vip)
                for streams in (1, 8) if processes == 1 else (8,):
                    medlb, peer, ratio, results = alternate(pairs, lambda: _iperf(vip, streams, seconds),
                                                           lambda: _iperf(hap, streams, seconds))
                    rows.append(Row(f"TCP bulk throughput, {streams} stream(s), {_sides(processes)}", "Gbit/s",
                                    round(medlb, 2), round(peer, 2), f"HAProxy mode tcp, nbthread {processes}",
                                    round(ratio, 3), ">= 1.0", pairs=results))
    return rows


def _wrk(port: int, seconds: float, connections: int, close: bool) -> float:
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + [f"http://{LOOPBACK}:{port}/"], capture_output=True, text=True,
                         timeout=seconds + 30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    return float(match.group(1)) if match else 0.0


#: The connection-rate row balances this many servers (all the one nginx), so the
#: scheduler's cost is in the figure: round robin's pick, across workers its shared cursor.
CONNECTION_SERVERS = 3


def _warm_up(port: int, tries: int = 10) -> None:
    """Until requests come back through medlb: with workers, the port answers (the
    control process bound it) before every worker accepts on its socket, and a run
    started then measured 0 conn/s on a loaded machine."""
    for _ in range(tries):
        if _wrk(port, 1, 8, close=True) > 0:
            return


def tcp_connections(quick: bool) -> list[Row]:
    """Short connections over three servers: 1 medlb worker against HAProxy nbthread 1,
    then 2 against 2."""
    if not (haproxy_available() and shutil.which("wrk") and shutil.which("nginx")):
        return [Row("new TCP connections per second", "conn/s", None, None, "HAProxy", None, ">= 0.8",
                    note="haproxy, wrk or nginx missing (make bench installs them)")]
    seconds, pairs = (0.5, 1) if quick else (2.0, 3)
    directory = workdir("conn")
    rows = []
    backend = free_ports(1)[0]
    with _nginx(backend, directory):
        for processes in PROCESSES:
            vip, hap = free_ports(2)
            with Medlb([_tcp_service(vip, backend, CONNECTION_SERVERS)], directory, workers=processes), \
                    haproxy(_haproxy_tcp(hap, backend, threads=processes, servers=CONNECTION_SERVERS), directory,
                            hap):
                wait_port(vip)
                _warm_up(vip)
                medlb, peer, ratio, results = alternate(pairs, lambda: _wrk(vip, seconds, 32, close=True),
                                                       lambda: _wrk(hap, seconds, 32, close=True))
            rows.append(Row(f"new TCP connections per second (HTTP, Connection: close, {CONNECTION_SERVERS} servers "
                            f"round robin), {_sides(processes)}",
                            "conn/s", round(medlb), round(peer), f"HAProxy mode tcp, nbthread {processes}",
                            round(ratio, 3), ">= 0.5" if processes == 1 else ">= 0.8", pairs=results))
    return rows


#: medlb workers and HAProxy threads, side by side: one each, then one per core of a 2-core machine.
PROCESSES = (1, 2)


def _sides(processes: int) -> str:
    return f"{processes} worker{'s' if processes > 1 else ''} vs nbthread {processes}"


def _hold_idle(port: int, count: int, request: bytes = b"") -> list[socket.socket]:
    """`count` connections left open; each first sends `request` and reads its answer
    whole (one read of a small response) when one is given."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((LOOPBACK, port))
        if request:
            sock.sendall(request)
            sock.settimeout(5)
            if not sock.recv(65536).startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"no 200 answer from port {port}")
        socks.append(sock)
    return socks


#: What each idle HTTP client sent before it went quiet (keep-alive: the default in 1.1).
IDLE_HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _idle_rss(quick: bool, name: str, medlb_service, haproxy_config, request: bytes = b"") -> list[Row]:  # type: ignore[no-untyped-def]
    """RSS growth per idle client connection, medlb against HAProxy: 5,000 clients
    (each first makes `request`, if any) held open while both processes are measured."""
    if not (haproxy_available() and shutil.which("nginx")):
        return [Row(name, "bytes", None, None, "HAProxy", None, "<= 1.0",
                    note="haproxy or nginx missing (make bench installs them)")]
    count = 200 if quick else 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = min(count, (hard - 200) // 2)
    vip, hap, backend = free_ports(3)
    directory = workdir("idle")
    results = []
    mode = "http" if request else "tcp"
    with _nginx(backend, directory):
        for port, context in ((vip, Medlb([medlb_service(vip, backend)], directory)),
                              (hap, haproxy(haproxy_config(hap, backend), directory, hap))):
            with context as proc:
                wait_port(port)
                if request:  # warm up: the server connection pooled, the code paths run once
                    for sock in _hold_idle(port, 4, request):
                        sock.close()
                time.sleep(0.3)
                before = rss_bytes(proc.pid)
                socks = _hold_idle(port, count, request)
                time.sleep(0.5)
                after = rss_bytes(proc.pid)
                for sock in socks:
                    sock.close()
            results.append((after - before) / count)
    medlb, peer = results
    return [Row(f"{name} ({count} connections)", "bytes", round(medlb), round(peer),
                f"HAProxy mode {mode}", round(medlb / peer, 3) if peer > 0 else None, "<= 1.0",
                note="lower is better")]


def idle_memory(quick: bool) -> list[Row]:
    return _idle_rss(quick, "memory per idle connection", _tcp_service, _haproxy_tcp)


def idle_memory_http(quick: bool) -> list[Row]:
    return _idle_rss(quick, "memory per idle HTTP keep-alive client connection", _http_service, _haproxy_http,
                     IDLE_HTTP_REQUEST)


# --- HTTP and HTTPS ---------------------------------------------------------------------

def _http_service(port: int, backend: int, **extra: object) -> dict:
    return {"name": "bench", "mode": "http", "listen": [f"{LOOPBACK}:{port}"],
            "health": {"type": "none"}, "limits": {"max_connections": 9000, "idle_timeout": "5m"},
            "servers": [{"name": "b1", "address": f"{LOOPBACK}:{backend}"}], **extra}


def _haproxy_http(port: int, backend: int, pem: str | None = None, threads: int = 1, splice: bool = False) -> str:
    """HAProxy doing what medlb's http mode does: X-Forwarded-For added, server
    connections kept alive and shared; `splice`: response bodies moved by the kernel
    (splice(2)), which medlb does not do; its pipes capped, else maxconn's default
    share of them passes the file limit."""
    bind = f"{LOOPBACK}:{port}" + (f" ssl crt {pem}" if pem else "")
    return f"""global
    maxconn 9000
    nbthread {threads}
{"    maxpipes 64" + chr(10) if splice else ""}defaults
    mode http
    option http-keep-alive
    timeout connect 3s
    timeout client 5m
    timeout server 5m
    timeout http-keep-alive 60s
frontend f
    bind {bind}
    option forwardfor
    default_backend b
backend b
    http-reuse always
{"    option splice-response" + chr(10) if splice else ""}    server b1 {LOOPBACK}:{backend}
"""


def _nginx(port: int, directory: Path) -> Process:
    return Process(["nginx", "-c", str(nginx_config(port, directory)), "-p", str(directory)], ready_port=port)


def _self_signed(directory) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """A throwaway certificate for 127.0.0.1: (cert, key, cert+key for HAProxy)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medlb bench")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    paths = (directory / "bench.crt", directory / "bench.key", directory / "bench.pem")
    paths[0].write_bytes(cert_pem)
    paths[1].write_bytes(key_pem)
    paths[2].write_bytes(cert_pem + key_pem)
    return str(paths[0]), str(paths[1]), str(paths[2])


def _wrk_url(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", url],
                         capture_output=True, text=True, timeout=seconds + 30)
    if "Non-2xx" in out.stdout:
        raise RuntimeError(f"wrk saw errors from {url}: {out.stdout[-400:]}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    return float(match.group(1)) if match else 0.0


def _http_rows(quick: bool, tls: bool) -> list[Row]:
    label = "HTTPS (TLS offload)" if tls else "HTTP"
    peer_name = "HAProxy mode http" + (" with TLS" if tls else "")
    if not (haproxy_available() and shutil.which("wrk") and shutil.which("nginx")):
        return [Row(f"{label} keep-alive requests/s", "req/s", None, None, peer_name, None, ">= 0.7",
                    note="haproxy, wrk or nginx missing (make bench installs them)")]
    backend = free_ports(1)[0]
    seconds, pairs = (0.5, 1) if quick else (2.0, 3)
    directory = workdir("https" if tls else "http")
    extra: dict = {}
    pem = None
    if tls:
        cert, key, pem = _self_signed(directory)
        extra["tls"] = {"cert": cert, "key": key}
    scheme = "https" if tls else "http"
    rows = []
    with _nginx(backend, directory):
        for processes in PROCESSES:
            vip, hap = free_ports(2)
            with Medlb([_http_service(vip, backend, **extra)], directory, workers=processes), \
                    haproxy(_haproxy_http(hap, backend, pem, threads=processes), directory, hap):
                wait_port(vip)
                _wrk_url(f"{scheme}://{LOOPBACK}:{vip}/", 0.5, 4)  # warm up: server connections pooled
                medlb, peer, ratio, results = alternate(
                    pairs, lambda: _wrk_url(f"{scheme}://{LOOPBACK}:{vip}/", seconds, 32),
                    lambda: _wrk_url(f"{scheme}://{LOOPBACK}:{hap}/", seconds, 32))
                rows.append(Row(f"{label} keep-alive requests/s, small responses, 32 connections, "
                                f"{_sides(processes)}", "req/s", round(medlb), round(peer),
                                f"{peer_name}, nbthread {processes}", round(ratio, 3),
                                ">= 0.5" if tls and processes == 1 else ">= 0.6", pairs=results))
                if processes > 1:
                    continue  # large responses: the copy is the kernel's, one process shows it
                if not tls:
                    rows.append(_http_through_the_tcp_relay(pairs, seconds, backend, directory, hap))
                medlb, peer, ratio, results = alternate(
                    pairs, lambda: _wrk_url(f"{scheme}://{LOOPBACK}:{vip}/1m.bin", seconds, 4) * ONE_MB * 8 / 1e9,
                    lambda: _wrk_url(f"{scheme}://{LOOPBACK}:{hap}/1m.bin", seconds, 4) * ONE_MB * 8 / 1e9)
                rows.append(Row(f"{label} 1 MB responses, 4 connections, {_sides(processes)}", "Gbit/s",
                                round(medlb, 2), round(peer, 2), f"{peer_name}, nbthread {processes}",
                                round(ratio, 3), ">= 0.8" if tls else ">= 1.0", pairs=results))
                if tls:
                    continue  # the kernel cannot splice what TLS encrypts
                spliced = free_ports(1)[0]
                with haproxy(_haproxy_http(spliced, backend, splice=True), directory, spliced):
                    medlb, peer, ratio, results = alternate(
                        pairs, lambda: _wrk_url(f"http://{LOOPBACK}:{vip}/1m.bin", seconds, 4) * ONE_MB * 8 / 1e9,
                        lambda: _wrk_url(f"http://{LOOPBACK}:{spliced}/1m.bin", seconds, 4) * ONE_MB * 8 / 1e9)
                rows.append(Row(f"{label} 1 MB responses, 4 connections, {_sides(processes)}, "
                                "HAProxy splicing", "Gbit/s", round(medlb, 2), round(peer, 2),
                                f"{peer_name} with option splice-response, nbthread {processes}",
                                round(ratio, 3), "report", pairs=results))
    return rows


def _http_through_the_tcp_relay(pairs: int, seconds: float, backend: int, directory: Path, hap: int) -> Row:
    """The same small requests through medlb's `tcp` mode, which reads no HTTP: what
    the sockets and the event loop allow a Python worker here, against HAProxy mode
    http; the gap to the `http` row is the http mode's own work per request."""
    port = free_ports(1)[0]
    (directory / "relay").mkdir(exist_ok=True)
    with Medlb([_tcp_service(port, backend)], directory / "relay"):
        wait_port(port)
        _wrk_url(f"http://{LOOPBACK}:{port}/", 0.5, 4)
        medlb, peer, ratio, results = alternate(pairs, lambda: _wrk_url(f"http://{LOOPBACK}:{port}/", seconds, 32),
                                                lambda: _wrk_url(f"http://{LOOPBACK}:{hap}/", seconds, 32))
    return Row(f"HTTP keep-alive requests/s, small responses, 32 connections, through medlb mode tcp (no HTTP "
               f"read), {_sides(1)}", "req/s", round(medlb), round(peer), "HAProxy mode http, nbthread 1",
               round(ratio, 3), "report", pairs=results)


def http(quick: bool) -> list[Row]:
    return _http_rows(quick, tls=False)


def https(quick: bool) -> list[Row]:
    return _http_rows(quick, tls=True)


# --- DICOM ---------------------------------------------------------------------------------


def dicom(quick: bool) -> list[Row]:
    """dcmtk storescu to storescp, direct and through a dicom service (bench/dicom_store.py)."""
    if not (shutil.which("storescu") and shutil.which("storescp")):
        return [Row("DICOM C-STORE of 500 instances", "instances/s", None, None, "direct", None, ">= 0.9",
                    note="dcmtk missing (make bench installs it)")]
    from bench.dicom_store import run

    count, pairs, samples, limit = (20, 1, 10, 20.0) if quick else (500, 9, 300, 90.0)
    result = run(count, pairs, samples, limit, workdir("dicom"))
    runs = result["pairs"]
    per_s = sorted(r["medlb_per_s"] for r in runs)[len(runs) // 2]
    direct_per_s = sorted(r["direct_per_s"] for r in runs)[len(runs) // 2]
    latency = result["latency"]
    return [
        Row(f"DICOM C-STORE of {count} instances (storescu to storescp), 1 worker", "instances/s", round(per_s),
            round(direct_per_s), "direct", result["median_ratio"], ">= 0.9",
            pairs=[(r["medlb_per_s"], r["direct_per_s"]) for r in runs]),
        Row("DICOM association set-up (A-ASSOCIATE to A-RELEASE), added latency p99", "ms",
            latency["added_p99_ms"], latency["direct_p99_ms"], "direct p99", None, "report p50/p99",
            note=f"added p50 {latency['added_p50_ms']} ms; through medlb p50 {latency['medlb_p50_ms']} / "
                 f"p99 {latency['medlb_p99_ms']} ms; {latency['samples']} samples"),
    ]


def not_yet(name: str, peer: str, target: str) -> list[Row]:
    return [Row(name, "", None, None, peer, None, target, note="mode not yet available")]


SCENARIOS = {
    "tcp-bulk": tcp_bulk,
    "tcp-connections": tcp_connections,
    "idle-memory": idle_memory,
    "idle-memory-http": idle_memory_http,
    "hl7": hl7,
    "http": http,
    "https": https,
    "dicom": dicom,
    "l4-dr": l4_dr,
    "l4-nat": l4_nat,
}
