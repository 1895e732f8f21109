"""`medlb ctl`: the admin API from a terminal, printing tables.

The address comes from --url or MEDLB_URL (default https://127.0.0.1:9443); the token
from --token-file, MEDLB_TOKEN_FILE or MEDLB_TOKEN (never from the command line, where
`ps` would show it). HTTPS is verified against --ca / MEDLB_CA (for the self-signed
certificate: state_dir/admin-tls/cert.pem) or the system's CAs; --insecure skips it.

Exit codes: 0 done, 1 the API refused or could not be reached, 2 a usage error, 3 done
but not confirmed by every worker process within the settle time (the API answered 202:
the action is stored and in force in the other processes; the ones named take it when
they run again).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any, Sequence

DEFAULT_URL = "https://127.0.0.1:9443"


class CtlError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str, ca: str | None = None, insecure: bool = False, timeout: float = 30):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        #: Workers that did not confirm an action this client made (a 202 answer).
        self.not_answered: set[int] = set()
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            if insecure:
                self.context = ssl._create_unverified_context()
            else:
                self.context = ssl.create_default_context(cafile=ca)
                if ca:
                    # A self-signed admin certificate is its own CA: do not require the
                    # strict extensions a public CA's certificate has.
                    self.context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                answer = json.loads(response.read() or b"null")
            if isinstance(answer, dict) and answer.get("settled") is False:
                self.not_answered.update(answer.get("workers_not_answered", []))
            return answer
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
            except ValueError:
                answer = {}
            message = answer.get("error") or f"HTTP {exc.code}"
            problems = answer.get("problems") or []
            raise CtlError("\n".join([f"refused ({exc.code}): {message}"] + [f"  {p}" for p in problems])) from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach {self.url}: {exc.reason}") from None
        except OSError as exc:
            raise CtlError(f"cannot reach {self.url}: {exc}") from None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _when(at: float | None) -> str:
    if not at:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _pool_words(service: dict[str, Any]) -> str:
    active = service["active_pool"]
    words = {"primary": "primary", "backup": "BACKUP (failed over)", "none": "NONE (no server up)"}
    return words.get(active, active)


def _no_backup(service: dict[str, Any], pool: str) -> str:
    """Why halting `pool`'s primary servers would leave it no server, or ''."""
    found = service["pools"].get(pool)
    if found is None:
        return ""  # the API names the unknown pool
    label = "" if pool == "default" else f"pool {pool} of "
    if not found["backup"]:
        return f"{label}{service['name']} has no backup cluster"
    ready = [s["name"] for s in service["servers"] if s["pool"] == pool and s["backup"] and s["available"]]
    return "" if ready else f"no backup server of {label}{service['name']} is online and up"


def show_status(client: Client) -> str:
    services = client.request("GET", "/api/v1/services")
    services.sort(key=lambda s: (s["servers_up"] > 0, s["active_pool"] == "primary", s["name"]))
    rows = [[s["name"], s["mode"], ",".join(s["listen"]), _pool_words(s), _taking_work(s),
             s["active_connections"], s["total_connections"]] for s in services]
    return table(["service", "mode", "listen", "active pool", "taking work", "active", "total"], rows)


def _taking_work(service: dict[str, Any]) -> str:
    """Servers taking work / all, with the ready but idle ones (backup, waiting for failback) apart."""
    standby = service["servers_standby"]
    return f"{service['servers_taking_work']}/{service['servers_total']}" + (f" +{standby} standby" if standby else "")


def show_workers(client: Client) -> str:
    data = client.request("GET", "/api/v1/workers")
    if not data["processes"]:
        return "workers: 1 (the data plane runs in the control process)"
    rows = [[p["index"], p["pid"], "yes" if p["alive"] else "NO", p["restarts"], p["active_connections"],
             p["total_connections"]] for p in data["processes"]]
    return f"workers: {data['workers']}\n" + table(["worker", "pid", "alive", "restarts", "active", "total"], rows)


def show_servers(client: Client, service: str) -> str:
    data = client.request("GET", f"/api/v1/services/{service}")
    rows = []
    for s in data["servers"]:
        last = s.get("last_check") or {}
        rows.append([s["name"], s["pool"] + (" backup" if s["backup"] else ""), s["address"], s["state"], s["health"],
                     s["status_text"], s["weight"], s["active_connections"], s["total_connections"],
                     f"{last['latency'] * 1000:.1f}ms" if last else "-", s["health_reason"]])
    standby = f", {data['servers_standby']} standby" if data["servers_standby"] else ""
    header = (f"{data['name']} [{data['mode']}]: active pool {_pool_words(data)}, "
              f"{data['servers_taking_work']}/{data['servers_total']} taking work{standby}")
    return header + "\n" + table(["server", "pool", "address", "state", "health", "status", "weight", "active",
                                  "total", "check", "reason"], rows)


def show_audit(client: Client, limit: int, search: str) -> str:
    query = f"/api/v1/audit?limit={limit}" + (f"&q={urllib.request.quote(search)}" if search else "")
    entries = client.request("GET", query)
    rows = [[e["id"], _when(e["at"]), e["who"], e["action"], e["target"], e["text"], e["source"]] for e in entries]
    return table(["id", "at (utc)", "who", "action", "target", "detail", "source"], rows)


#: The last failures a protocol's service keeps (the page's lists): where in the
#: service's answer, the heading, and each entry's columns (title, field, shown when empty).
RECENT_FAILURES = (
    ("dicom", "last_rejects", "last rejected associations",
     [("calling AE", "calling_ae", "-"), ("called AE", "called_ae", "-"), ("reason", "reason", "-")]),
    ("mllp", "last_failures", "last negative ACKs",
     [("code", "code", "-"), ("reason", "reason", "-"), ("server", "server", "medlb")]),
    ("http", "last_errors", "last 502, 503 and 504 answers",
     [("status", "status", "-"), ("reason", "reason", "-"), ("server", "server", "-")]),
)


def show_failures(client: Client, service: str | None) -> str:
    """What the service pages show as failing: the servers whose health check fails
    (with the reason, since when, and the connect failures of every server that had
    some), and the protocol's last failures, newest first. No patient data: codes,
    reasons, AE titles and server names."""
    services = ([client.request("GET", f"/api/v1/services/{urllib.request.quote(service)}")] if service
                else client.request("GET", "/api/v1/services"))
    blocks = []
    for view in services:
        failing = [s for s in view["servers"] if s["health"] == "down" or s["connect_failures"]]
        lines = [f"{view['name']} [{view['mode']}]"]
        if failing:
            lines.append(table(["server", "health", "since (utc)", "reason", "connect failures"], [
                [s["name"], s["health"], _when(s["health_changed_at"]), s["health_reason"] or "-",
                 s["connect_failures"]] for s in failing]))
        else:
            lines.append("every server passes its health check; no connect failures")
        for section, key, heading, columns in RECENT_FAILURES:
            if section not in view:
                continue
            entries = view[section][key]
            lines.append(f"{heading} (newest first):" if entries else f"{heading}: none since medlb started")
            if entries:
                lines.append(table(["at (utc)", *(title for title, _, _ in columns)],
                                   [[_when(e["at"]), *(e.get(field) or empty for _, field, empty in columns)]
                                    for e in entries]))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def show_l4(client: Client, service: str, as_json: bool = False) -> str:
    """A layer 4 service as the kernel runs it, in the kernel's own terms (marks,
    MACs, counter names), so each line can be found in `nft list table ...`."""
    view = client.request("GET", f"/api/v1/services/{urllib.request.quote(service)}/l4")
    if as_json:
        return json.dumps(view, indent=2, sort_keys=True)
    dr = view["mode"] == "l4-dr"
    rows = []
    for s in view["servers"]:
        target = (s["mac"] or "unknown") if dr else s["address"] + (f":{s['port']}" if s["port"] else "")
        rows.append([s["name"], s["mark"], *([s["address"]] if dr else []), target,
                     "yes" if s["takes_new_flows"] else "no", "yes" if s["forwarding"] else "no",
                     _percent(s["share"]), s["packets"], s["bytes"], s["new_flows"],
                     "-" if s["flows"] is None else s["flows"]])
    headers = ["server", "mark", *(["address", "mac"] if dr else ["target"]), "takes new flows", "forwarding",
               "share", "packets", "bytes", "new flows", f"flows ({view['flows_counted_by']})"]
    name = view["service"]
    no_server = view["no_server"]
    lines = [f"{name} [{view['mode']}]: table {view['table']}, chain {view['chain']}, interface {view['interface']}",
             f"hash: jhash {view['hash']} mod {view['table_size']} seed {view['seed']}; "
             f"programmed {_when(view['applied_at'])} (utc)",
             f"kernel error: {view['error']}" if view["error"] else "kernel: programmed as shown",
             f"no server for a new flow: {no_server.get('packets', 0)} packets dropped (counter no_server_{name})",
             "", table(headers, rows), "",
             f"counters: traffic_{name}/SERVER (packets, bytes), new_{name}/SERVER (new flows); compare with "
             f"`nft list counters table {view['table']}`",
             f"rules as medlb renders them (compare with `nft list table {view['table']}`):", "",
             view["ruleset"].rstrip("\n")]
    return "\n".join(lines)


def show_ha(client: Client) -> str:
    """This node of the pair: its role, since when, the peer, the VIPs it holds."""
    ha = client.request("GET", "/api/v1/ha")
    peer = ha["peer"]
    keeper = ha["keepalived"]
    lines = [f"node {ha['node']} ({ha['address']}, priority {ha['priority']}): {ha['role']} "
             f"({ha['role_text']}) since {_when(ha['since'])}",
             f"peer {peer['name']} ({peer['address']}, priority {peer['priority']})",
             f"VIPs on {ha['interface']}: {', '.join(ha['vips'])}; held here: {', '.join(ha['vips_held']) or 'none'}",
             f"keepalived: pid {keeper['pid']}, {'running' if keeper['running'] else 'NOT RUNNING'}"
             + (", adopted after a restart" if keeper["adopted"] else "")
             + (f", restarted {keeper['restarts']} time(s)" if keeper["restarts"] else ""),
             f"sync: {ha['sync']}"]
    episode = ha.get("split_brain")
    if episode:
        lines.append(f"last split brain: {_when(episode['start'])} to {_when(episode['end'])} "
                     f"({episode['duration']:.1f} s{'' if episode['start_known'] else ' at most'}); this node "
                     + ("kept the VIPs" if episode["kept_vips"] else "yielded them"))
    return "\n".join(lines)


def hand_over(client: Client, action: str, yes: bool) -> str:
    """release / takeover: moves the VIPs, so it asks for --yes first."""
    if not yes:
        raise CtlError(f"ha {action} moves the VIPs between the nodes (connections through this node are cut); "
                       "nothing was changed: add --yes to do it")
    answer = client.request("POST", f"/api/v1/ha/{action}")
    if not answer["done"]:
        raise CtlError(f"ha {action}: {answer['text']}")
    return f"ha {action}: {answer['text']}\n" + show_ha(client)


def _token(args: argparse.Namespace) -> str:
    path = args.token_file or os.environ.get("MEDLB_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise CtlError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or 'empty'}") from None
    token = os.environ.get("MEDLB_TOKEN", "")
    if not token:
        raise CtlError("no token: set MEDLB_TOKEN or MEDLB_TOKEN_FILE, or pass --token-file")
    return token


def run(args: argparse.Namespace) -> int:
    try:
        client = Client(args.url or os.environ.get("MEDLB_URL") or DEFAULT_URL, _token(args),
                        ca=args.ca or os.environ.get("MEDLB_CA"), insecure=args.insecure)
        out = dispatch(client, args)
    except CtlError as exc:
        print(f"medlb ctl: {exc}", file=sys.stderr)
        return 1
    print(out)
    if client.not_answered:
        workers = ", ".join(str(index) for index in sorted(client.not_answered))
        print(f"medlb ctl: not confirmed by worker {workers} within the settle time: it is in force in the "
              "other processes, and the worker takes it when it runs again (see `medlb ctl workers`)",
              file=sys.stderr)
        return 3
    return 0


def dispatch(client: Client, args: argparse.Namespace) -> str:
    action = args.action
    if action == "status":
        return show_status(client)
    if action == "servers":
        return show_servers(client, args.service)
    if action == "workers":
        return show_workers(client)
    if action == "failures":
        return show_failures(client, args.service)
    if action == "l4":
        return show_l4(client, args.service, args.json)
    if action in ("halt", "drain", "online"):
        client.request("POST", f"/api/v1/services/{args.service}/servers/{args.server}/state", {"state": action})
        return f"{args.service}/{args.server}: {action}\n" + show_servers(client, args.service)
    if action in ("failover", "restore"):
        state = "halt" if action == "failover" else "online"
        service = client.request("GET", f"/api/v1/services/{args.service}")
        pools = [args.pool] if args.pool else list(service["pools"])
        unserved = [] if action == "restore" else [why for pool in pools if (why := _no_backup(service, pool))]
        if unserved and not args.force:
            raise CtlError("; ".join(unserved) + ": halting its primary servers leaves the service with NO server "
                           "and clients are refused; nothing was changed (add --force to do it anyway)")
        for pool in pools:
            client.request("POST", f"/api/v1/services/{args.service}/pools/{pool}/state",
                           {"state": state, "tier": "primary"})
        if action == "restore":
            done = "primary servers online again (with failback: manual, run `medlb ctl failback` too)"
        elif unserved:
            done = "primary servers halted: " + "; ".join(unserved) + ": the service has NO server for it"
        else:
            done = "primary servers halted: traffic goes to the backup"
        return f"{args.service}: {done}\n" + show_servers(client, args.service)
    if action == "failback":
        answer = client.request("POST", f"/api/v1/services/{args.service}/failback",
                                {"pool": args.pool} if args.pool else {})
        kept = "".join(f"; pool {pool} stays: {why}" for pool, why in answer.get("not_failed_back", {}).items())
        return f"{args.service}: failed back to the primary servers{kept}\n" + show_servers(client, args.service)
    if action == "ha":
        return show_ha(client) if args.what == "status" else hand_over(client, args.what, args.yes)
    if action == "reload":
        answer = client.request("POST", "/api/v1/reload")
        return f"reloaded: {', '.join(answer['services'])}"
    if action == "audit":
        return show_audit(client, args.limit, args.search)
    if action == "unlock":
        if not args.user and not args.address:
            raise CtlError("name the user (--user) or the address (--address) to unlock")
        answer = client.request("POST", "/api/v1/unlock", {"user": args.user, "address": args.address})
        return "lifted the login lock-out of " + ", ".join(answer["unlocked"])
    raise CtlError(f"unknown action {action}")


def add_parser(commands: Any) -> None:
    ctl = commands.add_parser("ctl", help="control a running medlb through its admin API",
                              description="Talks to the admin API; the token comes from MEDLB_TOKEN, "
                                          "MEDLB_TOKEN_FILE or --token-file.")
    ctl.add_argument("--url", help=f"the admin address (MEDLB_URL; default {DEFAULT_URL})")
    ctl.add_argument("--token-file", help="a file holding the API token (MEDLB_TOKEN_FILE)")
    ctl.add_argument("--ca", help="CA file to verify HTTPS with (MEDLB_CA), e.g. state_dir/admin-tls/cert.pem")
    ctl.add_argument("--insecure", action="store_true", help="do not verify the admin certificate")
    actions = ctl.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="every service: active pool, servers up, connections")
    actions.add_parser("workers", help="the data-plane processes: alive, restarts, connections")
    servers = actions.add_parser("servers", help="the servers of a service")
    servers.add_argument("service")
    failures = actions.add_parser("failures", help="what is failing: servers down with the reason, and the last "
                                                   "rejected associations, negative ACKs or 5xx answers")
    failures.add_argument("service", nargs="?", help="one service (default: every service)")
    l4 = actions.add_parser("l4", help="a layer 4 service as the kernel runs it: rules, marks, MACs, counters")
    l4.add_argument("service")
    l4.add_argument("--json", action="store_true", help="the API's answer as JSON")
    for name, text in (("halt", "no work at all"), ("drain", "no new work; existing goes on"),
                       ("online", "takes work again")):
        parser = actions.add_parser(name, help=f"set a server {name}: {text}")
        parser.add_argument("service")
        parser.add_argument("server")
    for name, text in (("failover", "halt the primary servers: traffic goes to the backup cluster"),
                       ("restore", "set the primary servers online again"),
                       ("failback", "leave the backup for the primaries (failback: manual)")):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("service")
        parser.add_argument("--pool", help="one pool only (default: every pool of the service)" if name != "failback"
                            else "one pool only")
        if name == "failover":
            parser.add_argument("--force", action="store_true",
                                help="halt the primaries even when no backup server can take the work")
    ha = actions.add_parser("ha", help="the clustered pair: this node's role, the peer, the VIPs")
    ha.add_argument("what", choices=["status", "release", "takeover"],
                    help="status: this node's role, peer and VIPs; release: give the VIPs to the peer and stay "
                         "passive; takeover: make this node active (also with preempt: false)")
    ha.add_argument("--yes", action="store_true", help="do release or takeover (they move the VIPs)")
    actions.add_parser("reload", help="re-read the config file (admin role)")
    unlock = actions.add_parser("unlock", help="lift a web login lock-out (admin role)")
    unlock.add_argument("--user", help="the user name (from every address, or only --address)")
    unlock.add_argument("--address", help="the source address (and every user's lock from it)")
    audit = actions.add_parser("audit", help="operator actions, newest first")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--search", default="", help="only entries containing this")
    ctl.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medlb")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ctl", *(argv or sys.argv[1:])])
    return int(args.func(args))
