"""`medlb run | check | rs-setup | demo | plan | passwd | ctl`: the operator's entry points.

Exit codes: 0 fine, 1 could not start (a port in use, an unreadable file), 2 the
config file is invalid (every problem is printed with its path and line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Sequence

from medlb import __version__
from medlb.config import ConfigError, LoadedConfig, Problem, load_config, print_problems
from medlb.config.models import L4_MODES
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


def _l4_summary(service) -> str:  # type: ignore[no-untyped-def]
    """`l4: interface lb0; source_nat off; VIP added by medlb; on_stop remove; pins 2h`."""
    l4 = service.l4
    parts = [f"interface {l4.interface}"]
    if service.mode == "l4-nat":
        parts.append(f"source_nat {'on' if l4.source_nat else 'off'}")
    parts.append("VIP added by medlb" if l4.manage_vip else "VIP left to the operator")
    parts.append(f"on_stop {l4.on_stop}")
    if service.mode == "l4-dr":
        parts.append(f"pins {format_duration(l4.pin_timeout)}")
    return "      l4: " + "; ".join(parts)


def _server_text(server) -> str:  # type: ignore[no-untyped-def]
    text = f"{server.name}={server.address}" + (f" w{server.weight}" if server.weight != 1 else "")
    return text + (f" AE {server.ae_title}" if server.ae_title else "")


def summary(loaded: LoadedConfig, host_advisories: Sequence[Problem] = ()) -> str:
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
        if service.mode in L4_MODES:
            lines.append(_l4_summary(service))
        for pool_name, pool in service.all_pools().items():
            prefix = "" if pool_name == "default" else f"pool {pool_name}: "
            lines.append(f"      {prefix}servers: " + ", ".join(map(_server_text, pool.servers)))
            if pool.backup:
                lines.append(f"      {prefix}backup:  " + ", ".join(map(_server_text, pool.backup)))
    if loaded.warnings:
        lines.append("notes:")
        lines.extend(f"  {warning}" for warning in loaded.warnings)
    advisories = [*loaded.advisories, *host_advisories]
    if advisories:
        lines.append("advisories (medlb runs with these):")
        lines.extend(f"  {advisory}" for advisory in advisories)
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        local = frozenset[str]()
        if not args.no_host:
            from medlb.kernel.host import local_addresses

            local = local_addresses()
        loaded = load_config(args.config, read_files=not args.no_host, local_hosts=local)
    except ConfigError as exc:
        print_problems(f"{exc.source}: invalid", exc.problems)
        return 2
    host_errors: list[Problem] = []
    host_advisories: list[Problem] = []
    if not args.no_host:
        from medlb.kernel.host import host_problems

        for found in host_problems(loaded.config):
            problem = loaded.problem(found.path_key, found.message)
            (host_errors if found.level == "error" else host_advisories).append(problem)
    if host_errors:
        print_problems(f"{loaded.source}: valid, but medlb cannot run it on this host (medlb check --no-host "
                       "checks the file alone)", host_errors)
        return 2
    print(summary(loaded, host_advisories))
    return 0


def cmd_rs_setup(args: argparse.Namespace) -> int:
    """Print what the real servers of a layer 4 service need; runs nothing."""
    from medlb.kernel import rs_setup
    from medlb.kernel.host import read_host, route_back_via

    try:
        loaded = load_config(args.config, read_files=False)  # prints, reads no certificate or token
    except ConfigError as exc:
        print_problems(f"{exc.source}: invalid", exc.problems)
        return 2
    services = {service.name: service for service in loaded.config.services}
    service = services.get(args.service)
    if service is None:
        print(f"medlb rs-setup: {loaded.source} has no service named {args.service!r} "
              f"(it has {', '.join(services) or 'none'})", file=sys.stderr)
        return 2
    if service.mode not in L4_MODES:
        print(f"medlb rs-setup: service {service.name!r} is mode {service.mode}: rs-setup is for the kernel layer 4 "
              "modes (l4-dr, l4-nat); in a layer 7 mode medlb connects to the servers itself and they need no "
              "set-up", file=sys.stderr)
        return 2
    if service.mode == "l4-dr":
        print(rs_setup.dr_setup(service, args.nic), end="")
    else:
        assert service.l4 is not None
        via = [] if service.l4.source_nat else route_back_via(service, read_host())
        print(rs_setup.nat_setup(service, via), end="")
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
    from medlb.proctitle import CONTROL, set_title

    set_title(CONTROL)
    app = App(args.config, log_format=args.log_format, log_level=args.log_level, node=args.node,
              state_dir=args.state_dir)
    try:
        _run_loop(app.run())
    except ConfigError as exc:
        print_problems(f"{exc.source}: invalid", exc.problems)
        return 2
    except StartError as exc:
        print(f"medlb cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_ha_alive(args: argparse.Namespace) -> int:
    """`python -m medlb ha-alive` is answered before this module loads (medlb/__main__.py);
    this is the same check for the installed `medlb` command."""
    from medlb.ha.alive import main as alive

    return alive(["--state-dir", args.state_dir])


def cmd_worker(args: argparse.Namespace) -> int:
    """A data-plane worker; only the control process starts these (see medlb.workers)."""
    from medlb.proctitle import set_title, worker_title
    from medlb.workers.worker import serve

    set_title(worker_title(args.index))
    _run_loop(serve(args.index, args.channel_fd))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.pair:
        from medlb.demo.pair import run_pair_demo

        return run_pair_demo(args)
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
    config_file(run)
    run.add_argument("--log-format", choices=["text", "json"], help="overrides log.format")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    run.add_argument("--node", help="ha: which node of ha.nodes this is (default: the one whose address this "
                                    "host has)")
    run.add_argument("--state-dir", help="overrides state_dir (two nodes of a pair on one host)")
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="validate a config file and print a summary")
    config_file(check)
    check.add_argument("--no-host", action="store_true",
                       help="check the file alone: not the files it names (certificates, keys, token files) "
                            "nor whether this host can run its layer 4 services")
    check.set_defaults(func=cmd_check)

    setup = commands.add_parser("rs-setup", help="print what the real servers of a layer 4 service need")
    setup.add_argument("-c", "--config", required=True, help="the YAML config file")
    setup.add_argument("service", help="the name of an l4-dr or l4-nat service")
    setup.add_argument("--nic", default="eth0",
                       help="l4-dr: the servers' interface on the balancer's segment (default eth0)")
    setup.set_defaults(func=cmd_rs_setup)

    demo = commands.add_parser("demo", help="run medlb with simulated servers on loopback")
    demo.add_argument("--base-port", type=int, default=17000, help="first port of the demo's listeners")
    demo.add_argument("--admin-port", type=int, default=9443)
    demo.add_argument("--state-dir", help="where the demo keeps its state (default: a temporary folder)")
    demo.add_argument("--log-format", choices=["text", "json"], default="text")
    demo.add_argument("--pair", action="store_true",
                      help="as root: the clustered pair in network namespaces (kill the active node, watch the "
                           "VIP move)")
    demo.set_defaults(func=cmd_demo)

    passwd = commands.add_parser("passwd", help="print a password hash for admin.users")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=cmd_passwd)

    alive = commands.add_parser("ha-alive", help="keepalived's track script: exit 0 when this node's medlb "
                                                 "says its data plane is alive")
    alive.add_argument("--state-dir", required=True, help="the node's state directory")
    alive.set_defaults(func=cmd_ha_alive)

    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--channel-fd", type=int, required=True)
    worker.set_defaults(func=cmd_worker)

    from medlb import ctl, hl7send
    from medlb.plan import command as plan

    hl7send.add_parser(commands)
    plan.add_parser(commands)
    ctl.add_parser(commands)
    return parser


def config_file(command: argparse.ArgumentParser) -> None:
    """`medlb run FILE` and `medlb run -c FILE` both work (and so for check): the
    one form operators type, the other what scripts and systemd units have."""
    command.add_argument("file", nargs="?", help="the YAML config file")
    command.add_argument("-c", "--config", help="the YAML config file (the same as giving it without -c)")
    command.set_defaults(needs_config=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "needs_config", False):
        if args.file is not None and args.config is not None and args.file != args.config:
            parser.error(f"medlb {args.command}: give the config file once, as FILE or as -c FILE, not both")
        args.config = args.config or args.file
        if args.config is None:
            parser.error(f"medlb {args.command}: which config file? medlb {args.command} FILE (or -c FILE)")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
