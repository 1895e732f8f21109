"""`medlb run | check | demo | passwd | ctl`: the operator's entry points.

Exit codes: 0 fine, 1 could not start (a port in use, an unreadable file), 2 the
config file is invalid (every problem is printed with its path and line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Sequence

from medlb import __version__
from medlb.config import ConfigError, LoadedConfig, load_config
from medlb.config.units import format_duration


def _compact_listen(service) -> str:  # type: ignore[no-untyped-def]
    """`0.0.0.0:12000,12100,12300-12301` instead of one address per port."""
    by_host: dict[str, list[int]] = {}
    for address in service.addresses:
        by_host.setdefault(str(address).rsplit(":", 1)[0], []).append(address.port)
    parts = []
    for host, ports in by_host.items():
        ports.sort()
        runs: list[str] = []
        start = prev = ports[0]
        for port in ports[1:] + [None]:
            if port is not None and port == prev + 1:
                prev = port
                continue
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            if port is not None:
                start = prev = port
        parts.append(f"{host}:{','.join(runs)}")
    return " ".join(parts)


def _ha_summary(ha) -> str:  # type: ignore[no-untyped-def]
    """`pair: lb-a 198.18.0.4 (priority 150), lb-b ...; VIPs ... on lb0; VRRP id 51 every 500ms, preempt off`."""
    nodes = ", ".join(f"{node.name} {node.address} (priority {node.priority})" for node in ha.nodes)
    vips = ", ".join(map(str, ha.vips))
    return (f"  pair: {nodes}; VIPs {vips} on {ha.interface}; VRRP id {ha.virtual_router_id} every "
            f"{format_duration(ha.advert_interval)}, preempt {'on' if ha.preempt else 'off'}")


def _dicom_summary(service) -> str:  # type: ignore[no-untyped-def]
    """`dicom: AE MEDLB; calling AEs CT1, WS*; routes called ARCHIVE -> archive; unrouted default`."""
    from medlb.config.models import DicomConfig

    dicom = service.dicom or DicomConfig()
    allowed = ", ".join(dicom.allowed_calling_aes) if dicom.allowed_calling_aes is not None else "any"
    routes = []
    for route in dicom.routes:
        match = [f"{side} {value}" for side, value in (("called", route.called_ae), ("calling", route.calling_ae))
                 if value is not None]
        routes.append(f"{' and '.join(match) or 'any'} -> {route.pool}")
    return (f"      dicom: AE {dicom.ae_title}; calling AEs {allowed}; "
            f"routes {', '.join(routes) or 'none'}; unrouted {dicom.unrouted}")


def _server_text(server) -> str:  # type: ignore[no-untyped-def]
    text = f"{server.name}={server.address}" + (f" w{server.weight}" if server.weight != 1 else "")
    return text + (f" AE {server.ae_title}" if server.ae_title else "")


def summary(loaded: LoadedConfig) -> str:
    config = loaded.config
    lines = [f"{loaded.source}: valid, {len(config.services)} service(s)"]
    admin = config.admin
    if admin is None:
        where = "off (no admin section)"
    else:
        scheme = "http" if admin.tls == "off" else "https"
        tls = {"off": "plain HTTP", "auto": "self-signed certificate in state_dir"}.get(
            admin.tls if isinstance(admin.tls, str) else "", "configured certificate")
        where = (f"{scheme}://{admin.listen}/ ({tls}); {len(admin.users)} user(s), "
                 f"{len(admin.tokens) + bool(admin.token) + bool(admin.token_file)} token(s)")
    lines.append(f"  admin: {where}; state_dir: {loaded.state_dir}; workers: {config.workers}")
    if config.ha is not None:
        lines.append(_ha_summary(config.ha))
    for service in config.services:
        health = service.health
        check = health.type if health.type == "none" else (
            f"{health.type} every {format_duration(health.interval)} (rise {health.rise}, fall {health.fall})")
        lines.append(f"  {service.name} [{service.mode}] {_compact_listen(service)}")
        if service.mode == "mllp" and service.mllp and service.mllp.balance == "message":
            balance = f"balance per message by {service.mllp.ordering_key}"
        else:
            balance = f"{service.scheduler}, persistence {service.persistence.type}"
        lines.append(f"      {balance}, check {check}, failback {service.failback}")
        if service.mode == "dicom":
            lines.append(_dicom_summary(service))
        for pool_name, pool in service.all_pools().items():
            prefix = "" if pool_name == "default" else f"pool {pool_name}: "
            lines.append(f"      {prefix}servers: " + ", ".join(map(_server_text, pool.servers)))
            if pool.backup:
                lines.append(f"      {prefix}backup:  " + ", ".join(map(_server_text, pool.backup)))
    if loaded.warnings:
        lines.append("notes:")
        lines.extend(f"  {warning}" for warning in loaded.warnings)
    if loaded.advisories:
        lines.append("advisories (medlb runs with these):")
        lines.extend(f"  {advisory}" for advisory in loaded.advisories)
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc.source}: invalid, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(summary(loaded))
    return 0


def _run_loop(coro) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        asyncio.run(coro)
        return
    uvloop.run(coro)


def cmd_run(args: argparse.Namespace) -> int:
    from medlb.app import App, StartError

    app = App(args.config, log_format=args.log_format, log_level=args.log_level)
    try:
        _run_loop(app.run())
    except ConfigError as exc:
        print(f"{exc.source}: invalid, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"medlb cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A data-plane worker; only the control process starts these (see medlb.workers)."""
    from medlb.workers.worker import serve

    _run_loop(serve(args.index, args.channel_fd))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from medlb.demo import run_demo

    return run_demo(args)


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print a scrypt hash for `admin.users[].password_hash`; the password is never echoed."""
    import getpass

    from medlb.passwords import hash_password

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("medlb passwd: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("medlb passwd: use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medlb", description="A load balancer for hospital systems.")
    parser.add_argument("--version", action="version", version=f"medlb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run medlb in the foreground")
    run.add_argument("-c", "--config", required=True, help="the YAML config file")
    run.add_argument("--log-format", choices=["text", "json"], help="overrides log.format")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="validate a config file and print a summary")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    demo = commands.add_parser("demo", help="run medlb with simulated servers on loopback")
    demo.add_argument("--base-port", type=int, default=17000, help="first port of the demo's listeners")
    demo.add_argument("--admin-port", type=int, default=9443)
    demo.add_argument("--state-dir", help="where the demo keeps its state (default: a temporary folder)")
    demo.add_argument("--log-format", choices=["text", "json"], default="text")
    demo.set_defaults(func=cmd_demo)

    passwd = commands.add_parser("passwd", help="print a password hash for admin.users")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=cmd_passwd)

    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--channel-fd", type=int, required=True)
    worker.set_defaults(func=cmd_worker)

    from medlb import ctl, hl7send

    hl7send.add_parser(commands)
    ctl.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
