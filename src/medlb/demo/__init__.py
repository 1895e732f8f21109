"""`medlb demo`: the balancer and simulated hospital servers, all on loopback.

The simulated servers run in the same process as medlb (on its event loop, and the
simulated PACS on pynetdicom's threads) so the demo is one process that Ctrl-C stops.
Each says who it is, so a client sees the balancing; the config the demo writes is an
ordinary medlb config, shown so an operator can read it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from medlb import logs
from medlb.config import ConfigError


async def _echo_server(name: str, port: int) -> asyncio.AbstractServer:
    """A stand-in for an archive port: greets with its name, then echoes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"{name} ready\n".encode())
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
        except (ConnectionError, OSError):
            pass

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def _http_server(name: str, port: int) -> asyncio.AbstractServer:
    """A stand-in for a viewer: answers every request with its name; /health is 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                path = head.split(b" ", 2)[1].decode(errors="replace") if b" " in head else "/"
                body = (b"ok\n" if path == "/health" else
                        f"<h1>served by {name}</h1>\n".encode())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def _hl7_engine(name: str, port: int) -> asyncio.AbstractServer:
    """A stand-in for an interface engine: answers every MLLP message with AA."""
    from medlb.protocols import mllp
    from medlb.protocols.hl7 import HL7Error, build_ack, parse_header

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = mllp.FrameDecoder(16 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                for event in decoder.feed(data):
                    if isinstance(event, mllp.Frame):
                        try:
                            header = parse_header(event.payload)
                        except HL7Error:
                            continue
                        writer.write(mllp.encode(build_ack(header, "AA", f"accepted by {name}",
                                                           sender=name.encode())))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


class _SimulatedPacs:
    """A storage SCP (pynetdicom) that answers only to its own AE title, accepts C-ECHO
    and C-STORE of every storage SOP class, and keeps nothing: it counts."""

    def __init__(self, ae_title: str, port: int):
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.ae_title = ae_title
        self.stored = 0
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True  # so the demo shows medlb's called AE rewriting
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: Any) -> int:
        self.stored += 1
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


PORTAL_TLS = "portal-tls"  # the portal's self-signed certificate, under the state directory


def demo_config(base: int, admin_port: int, token: str, state_dir: Path, password_hash: str = "") -> dict:
    vna_ports = [base + 100 + i for i in range(3)]
    web_ports = [base + 110, base + 111]
    hl7_ports = [base + 120, base + 121]
    pacs_ports = [base + 130, base + 131]
    portal_ports = [base + 140, base + 141]
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": token,
                  **({"users": [{"name": "demo", "password_hash": password_hash, "role": "admin"}]}
                     if password_hash else {})},
        "state_dir": str(state_dir),
        # The simulated servers run in this process too; one worker keeps the demo's
        # least-connections example exact (each worker balances its own connections).
        "workers": 1,
        "stop_timeout": "2s",
        "services": [
            {
                "name": "vna",
                "mode": "tcp",
                "listen": [f"127.0.0.1:{base}-{base + 1}"],
                "scheduler": "leastconn",
                "health": {"type": "tcp", "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2},
                "failback": "manual",
                "servers": [{"name": "vna1", "address": f"127.0.0.1:{vna_ports[0]}", "weight": 2},
                            {"name": "vna2", "address": f"127.0.0.1:{vna_ports[1]}"}],
                "backup": [{"name": "dr-vna1", "address": f"127.0.0.1:{vna_ports[2]}"}],
            },
            {
                "name": "viewer",
                "mode": "tcp",
                "listen": [f"127.0.0.1:{base + 10}"],
                "persistence": {"type": "source-ip", "timeout": "5m"},
                "health": {"type": "http", "path": "/health", "interval": "1s", "timeout": "500ms"},
                "servers": [{"name": "web1", "address": f"127.0.0.1:{web_ports[0]}"},
                            {"name": "web2", "address": f"127.0.0.1:{web_ports[1]}"}],
            },
            {
                "name": "adt",
                "mode": "mllp",
                "listen": [f"127.0.0.1:{base + 20}"],
                "mllp": {"ordering_key": "PID-3", "ack_timeout": "10s", "retries": 2},
                "health": {"type": "mllp", "interval": "2s", "timeout": "1s"},
                "servers": [{"name": "engine1", "address": f"127.0.0.1:{hl7_ports[0]}"},
                            {"name": "engine2", "address": f"127.0.0.1:{hl7_ports[1]}"}],
            },
            {
                "name": "pacs",
                "mode": "dicom",
                "listen": [f"127.0.0.1:{base + 30}"],
                "scheduler": "leastconn",
                "dicom": {"ae_title": "MEDLB", "allowed_calling_aes": ["CT*", "MR*", "WS*"]},
                "health": {"type": "dicom-echo", "interval": "2s", "timeout": "1s", "rise": 2, "fall": 2},
                "servers": [{"name": "pacs1", "address": f"127.0.0.1:{pacs_ports[0]}", "ae_title": "PACS1"},
                            {"name": "pacs2", "address": f"127.0.0.1:{pacs_ports[1]}", "ae_title": "PACS2"}],
            },
            {
                # HTTPS offload: medlb holds the certificate and reads each request, so
                # the page has responses by status class to show.
                "name": "portal",
                "mode": "http",
                "listen": [f"127.0.0.1:{base + 40}"],
                "tls": {"cert": str(state_dir / PORTAL_TLS / "cert.pem"),
                        "key": str(state_dir / PORTAL_TLS / "key.pem")},
                "health": {"type": "http", "path": "/health", "interval": "1s", "timeout": "500ms"},
                "servers": [{"name": "portal1", "address": f"127.0.0.1:{portal_ports[0]}"},
                            {"name": "portal2", "address": f"127.0.0.1:{portal_ports[1]}"}],
            },
        ],
    }, vna_ports, web_ports, hl7_ports, pacs_ports, portal_ports


def _sample_file() -> str:
    """A CT image shipped with pydicom, for the storescu example (never downloaded)."""
    try:
        from pydicom.data import get_testdata_file

        return str(get_testdata_file("CT_small.dcm", download=False) or "IMAGE.dcm")
    except Exception:  # the example line still reads well with a placeholder
        return "IMAGE.dcm"


def medlb_command() -> str:
    """How to start this medlb from any folder: `medlb` when that name on PATH is this
    installation, else the full path of its script, else this Python with `-m medlb`."""
    script = Path(sys.executable).parent / "medlb"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m medlb"
    on_path = shutil.which("medlb")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "medlb"
    return shlex.quote(str(script))


def dcmtk_command(name: str) -> str:
    """dcmtk's tool by its full path: a virtual environment's bin folder is skipped,
    since pynetdicom installs an `echoscu` and a `storescu` of its own there that take
    other options and would shadow dcmtk's once the environment is activated."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or (Path(folder).parent / "pyvenv.cfg").exists():
            continue
        found = Path(folder) / name
        if found.is_file() and os.access(found, os.X_OK):
            return shlex.quote(str(found))
    return f"/usr/bin/{name}"  # where Debian's dcmtk puts it (apt install dcmtk)


def _banner(base: int, admin_port: int, token: str, config_path: Path, password: str = "",
            fingerprint: str = "") -> str:
    api = f"https://127.0.0.1:{admin_port}"
    medlb, echoscu, storescu = medlb_command(), dcmtk_command("echoscu"), dcmtk_command("storescu")
    cert = config_path.parent / "admin-tls" / "cert.pem"
    auth = f'--cacert {cert} -H "Authorization: Bearer {token}"'
    return f"""
medlb demo is running (Ctrl-C stops it)

  config:     {config_path}
  web page:   {api}/      user: demo  password: {password}
              (self-signed certificate, SHA-256 {fingerprint})
  admin API:  {api}/api/v1/services      token: {token}
  medlb ctl:  MEDLB_URL={api} MEDLB_CA={cert} MEDLB_TOKEN={token} {medlb} ctl status
  metrics:    {api}/metrics

Try:
  printf 'hello\\n' | nc -q1 127.0.0.1 {base}          # VNA port 1 -> vna1/vna2 (leastconn, weight 2:1)
  printf 'hello\\n' | nc -q1 127.0.0.1 {base + 1}          # VNA port 2, same servers
  curl http://127.0.0.1:{base + 10}/                    # viewer, source-IP persistence
  {medlb} hl7-send 127.0.0.1:{base + 20} --count 3        # HL7 ADT over MLLP, ACKed by engine1/engine2
  curl -k https://127.0.0.1:{base + 40}/                   # portal: HTTPS offload (self-signed), portal1/portal2
  curl -s {auth} {api}/api/v1/services/portal            # HTTP responses by status class

  DICOM (dcmtk): the VIP answers as MEDLB; pacs1 and pacs2 answer only to PACS1 and PACS2,
  so every association that works shows medlb rewriting the called AE title.
  {echoscu} -v -aet CT1 -aec MEDLB 127.0.0.1 {base + 30}            # C-ECHO to pacs1 or pacs2 (leastconn)
  {storescu} -v -aet CT1 -aec MEDLB 127.0.0.1 {base + 30} {_sample_file()}
  {echoscu} -v -aet XR1 -aec MEDLB 127.0.0.1 {base + 30}            # rejected: calling AE not allowed (1,1,3)
  curl -s {auth} {api}/api/v1/services/pacs                        # associations by AE title, rejects
  curl -s {auth} -d '{{"state":"halt"}}' {api}/api/v1/services/pacs/servers/pacs1/state
  curl -s {auth} -d '{{"state":"halt"}}' {api}/api/v1/services/pacs/servers/pacs2/state  # echoscu: Rejected Transient
  curl -s {auth} {api}/api/v1/services
  curl -s {auth} -d '{{"state":"halt"}}' {api}/api/v1/services/vna/servers/vna1/state
  curl -s {auth} -d '{{"state":"halt"}}' {api}/api/v1/services/vna/servers/vna2/state   # fail over to dr-vna1
  curl -s {auth} -d '{{"state":"online"}}' {api}/api/v1/services/vna/servers/vna1/state
  curl -s {auth} -X POST {api}/api/v1/services/vna/failback      # failback is manual for vna
"""


async def _demo(args: argparse.Namespace, state_dir: Path) -> int:
    from medlb.app import App, StartError

    from medlb.passwords import hash_password

    token = secrets.token_urlsafe(24)
    password = secrets.token_urlsafe(9)
    from medlb.admin.tls import fingerprint, self_signed

    config, vna_ports, web_ports, hl7_ports, pacs_ports, portal_ports = demo_config(
        args.base_port, args.admin_port, token, state_dir, hash_password(password))
    self_signed(state_dir / PORTAL_TLS, "127.0.0.1", label="medlb demo portal")
    config_path = state_dir / "demo.yaml"
    config_path.write_text("# written by medlb demo\n" + yaml.safe_dump(config, sort_keys=False))
    backends: list[Any] = []
    try:
        for name, port in zip(("vna1", "vna2", "dr-vna1"), vna_ports):
            backends.append(await _echo_server(name, port))
        for name, port in zip(("web1", "web2", "portal1", "portal2"), web_ports + portal_ports):
            backends.append(await _http_server(name, port))
        for name, port in zip(("engine1", "engine2"), hl7_ports):
            backends.append(await _hl7_engine(name, port))
        for ae_title, port in zip(("PACS1", "PACS2"), pacs_ports):
            backends.append(_SimulatedPacs(ae_title, port))
    except OSError as exc:
        for server in backends:
            server.close()
        print(f"medlb demo: cannot start the simulated servers ({exc.strerror}); "
              f"try another --base-port", flush=True)
        return 1
    app = App(config_path, log_format=args.log_format)
    try:
        await app.start()
    except (StartError, ConfigError) as exc:
        for server in backends:
            server.close()
        print(f"medlb demo cannot start: {exc}; try --base-port and --admin-port", flush=True)
        return 1
    cert = state_dir / "admin-tls" / "cert.pem"
    print(_banner(args.base_port, args.admin_port, token, config_path, password,
                  fingerprint(cert.read_bytes()) if cert.exists() else ""), flush=True)
    await app._stop.wait()
    await app.stop()
    for server in backends:
        server.close()
    await asyncio.sleep(0.1)  # the simulated servers see medlb's links close
    print("medlb demo stopped", flush=True)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    logs.setup("info", args.log_format)
    temporary = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="medlb-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        return uvloop.run(_demo(args, state_dir))
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
