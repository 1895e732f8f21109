"""Web logins against a running medlb: users, session cookie, CSRF, lock-out, logout,
pool actions, audit search and CSV, the config page's API, HTTPS by default, and the
admin listener under abuse (bursts of guesses, huge bodies)."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import ssl
import threading
import time

import httpx
import psutil
import pytest

from helpers import LOOPBACK, TOKEN, free_ports, peak_rss_bytes, server, service, wait_until
from medlb.passwords import hash_password

PASSWORDS = {"olga": "operator-pass-1", "vera": "viewer-pass-1", "adam": "admin-pass-1"}
USERS = [
    {"name": "olga", "password_hash": hash_password(PASSWORDS["olga"], n=2**14), "role": "operator"},
    {"name": "vera", "password_hash": hash_password(PASSWORDS["vera"], n=2**14), "role": "viewer"},
    {"name": "adam", "password_hash": hash_password(PASSWORDS["adam"], n=2**14), "role": "admin"},
]


def admin_section(port: int, **extra) -> dict:
    return {"listen": f"{LOOPBACK}:{port}", "token": TOKEN, "users": USERS, **extra}


def start(medlb, backends, tls: str = "off", **admin_extra):
    vip, a, b, c = free_ports(4)
    for name, port in (("A", a), ("B", b), ("C", c)):
        backends.start(name, port)
    from helpers import free_port

    admin_port = free_port()
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)], backup=[server("C", c)])], start=False,
               admin={**admin_section(admin_port, tls=tls, **admin_extra)})
    lb.admin_port = admin_port
    lb.scheme = "http" if tls == "off" else "https"
    lb.base_url = f"{lb.scheme}://{LOOPBACK}:{admin_port}"
    lb.client = httpx.Client(base_url=lb.base_url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=10)
    lb.start()
    return lb, vip


def browser(lb) -> httpx.Client:
    """A client with no token: only what a browser would send."""
    return httpx.Client(base_url=lb.base_url, verify=False, timeout=10)


def login(client: httpx.Client, name: str, password: str | None = None) -> httpx.Response:
    return client.post("/api/v1/login", json={"name": name, "password": password or PASSWORDS[name]})


def test_login_sets_a_strict_session_cookie_and_changes_need_the_csrf_token(medlb, backends):
    lb, _ = start(medlb, backends)
    web = browser(lb)
    answer = login(web, "olga")
    assert answer.status_code == 200, answer.text
    assert answer.json()["role"] == "operator"
    csrf = answer.json()["csrf"]
    cookie = answer.headers["set-cookie"].lower()
    assert "medlb_session=" in cookie
    for flag in ("httponly", "secure", "samesite=strict", "path=/"):
        assert flag in cookie, cookie
    # httpx keeps Secure cookies only for https; carry it by hand on this plain-HTTP test.
    session = answer.cookies.get("medlb_session") or answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    web.cookies.set("medlb_session", session)

    assert web.get("/api/v1/services").status_code == 200
    path = "/api/v1/services/pacs/servers/A/state"
    refused = web.post(path, json={"state": "halt"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    wrong = web.post(path, json={"state": "halt"}, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403
    assert lb.server("pacs", "A")["state"] == "online"
    foreign = web.post(path, json={"state": "halt"}, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    done = web.post(path, json={"state": "halt"}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert lb.server("pacs", "A")["state"] == "halt"
    entry = lb.api("GET", "/api/v1/audit").json()[0]
    assert (entry["who"], entry["action"], entry["target"]) == ("olga", "set_state", "pacs/A")

    assert web.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert web.get("/api/v1/services").status_code == 401
    actions = [e["action"] for e in lb.api("GET", "/api/v1/audit").json()]
    assert actions[:3] == ["logout", "set_state", "login"]
    assert PASSWORDS["olga"] not in lb.log()


def test_a_login_from_another_site_is_refused(medlb, backends):
    lb, _ = start(medlb, backends)
    answer = browser(lb).post("/api/v1/login", json={"name": "olga", "password": PASSWORDS["olga"]},
                              headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers


def test_a_viewer_reads_but_changes_nothing(medlb, backends):
    lb, _ = start(medlb, backends)
    web = browser(lb)
    answer = login(web, "vera")
    web.cookies.set("medlb_session", answer.headers["set-cookie"].split(";")[0].split("=", 1)[1])
    headers = {"X-CSRF-Token": answer.json()["csrf"]}
    assert web.get("/api/v1/session").json()["role"] == "viewer"
    assert web.post("/api/v1/services/pacs/servers/A/state", json={"state": "halt"}, headers=headers).status_code == 403
    assert web.post("/api/v1/services/pacs/pools/default/state", json={"state": "halt"},
                    headers=headers).status_code == 403
    assert web.get("/api/v1/config").status_code == 403
    assert lb.server("pacs", "A")["state"] == "online"


def test_wrong_passwords_lock_the_user_out_from_that_address_only_until_an_admin_unlocks(medlb, backends):
    lb, _ = start(medlb, backends, lockout={"attempts": 3, "window": "10m", "duration": "10m"})
    web = browser(lb)
    codes = [login(web, "olga", "wrong").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    right = login(web, "olga")
    assert right.status_code == 429
    assert "for this user from this address: locked out for 10 min" in right.json()["error"]
    # Another user from that address, and olga from another address, are not locked out.
    assert login(web, "adam").status_code == 200
    elsewhere = httpx.Client(base_url=lb.base_url, verify=False, timeout=10,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert login(elsewhere, "olga").status_code == 200
    actions = [e["action"] for e in lb.api("GET", "/api/v1/audit?limit=10").json()]
    assert actions.count("login_failed") == 2 and actions.count("login_locked") >= 2

    lifted = lb.api("POST", "/api/v1/unlock", json={"user": "olga"})
    assert lifted.status_code == 200 and lifted.json() == {"unlocked": ["olga from 127.0.0.1"]}
    assert login(web, "olga").status_code == 200
    again = lb.api("POST", "/api/v1/unlock", json={"user": "olga"})
    assert again.status_code == 409 and again.json()["error"] == "user olga is not locked out: nothing to lift"
    entries = [e for e in lb.api("GET", "/api/v1/audit?q=unlock").json() if e["action"] == "unlock"]
    assert [e["text"] for e in entries] == ["Lifted the login lock-out of olga from 127.0.0.1"]


def test_the_first_page_load_asks_who_is_calling_without_a_401(medlb, backends):
    lb, _ = start(medlb, backends)
    answer = browser(lb).get("/api/v1/session")
    assert answer.status_code == 200 and answer.json()["name"] is None and answer.json()["ended"] is False
    stale = browser(lb)
    stale.cookies.set("medlb_session", "a-session-from-before-a-restart")
    assert stale.get("/api/v1/session").json() == {"name": None, "role": None, "csrf": None, "via": None,
                                                    "ended": True}
    assert stale.get("/api/v1/services").status_code == 401  # everything else still needs a login
    assert browser(lb).get("/api/v1/session", headers={"Authorization": "Bearer wrong-token-0123456789"}
                           ).status_code == 401


def test_a_password_typed_into_the_name_field_never_reaches_the_audit_log(medlb, backends):
    lb, _ = start(medlb, backends)
    web = browser(lb)

    assert login(web, "Winter-2026-secret!", "Winter-2026-secret!").status_code == 401
    assert login(web, "olga", "wrong").status_code == 401

    entries = lb.api("GET", "/api/v1/audit?limit=10").json()
    failed = [(e["who"], e["action"]) for e in entries if e["action"] == "login_failed"]
    assert sorted(failed) == [("(unknown user)", "login_failed"), ("olga", "login_failed")]
    assert "Winter-2026" not in lb.api("GET", "/api/v1/audit?format=csv").text
    assert "Winter-2026" not in lb.log()
    # Tokens keep working for scripts.
    assert lb.api("GET", "/api/v1/services").status_code == 200


def test_an_idle_session_ends(medlb, backends):
    lb, _ = start(medlb, backends, session_timeout="1s")
    web = browser(lb)
    answer = login(web, "olga")
    web.cookies.set("medlb_session", answer.headers["set-cookie"].split(";")[0].split("=", 1)[1])
    assert web.get("/api/v1/services").status_code == 200
    time.sleep(1.5)  # longer than the idle timeout: the session must be gone (not a timing assertion)
    gone = web.get("/api/v1/services")
    assert gone.status_code == 401 and "ended" in gone.json()["error"]


def test_pool_halt_fails_over_to_the_backup_and_is_audited_once(medlb, backends):
    from helpers import who_answers

    lb, vip = start(medlb, backends)
    for name in "ABC":
        lb.wait_health("pacs", name, "up", 15)
    answer = lb.api("POST", "/api/v1/services/pacs/pools/default/state", json={"state": "halt"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["service"]["active_pool"] == "backup"
    assert {who_answers(vip) for _ in range(4)} == {"C"}
    entries = lb.api("GET", "/api/v1/audit?q=set_pool_state").json()
    assert len(entries) == 1
    assert entries[0]["target"] == "pacs/default/primary"
    assert entries[0]["detail"]["to"] == "halt"
    lb.api("POST", "/api/v1/services/pacs/pools/default/state", json={"state": "online"})
    wait_until(lambda: who_answers(vip) in ("A", "B"), 10, what="the primaries to take work again")
    assert lb.api("POST", "/api/v1/services/pacs/pools/nope/state", json={"state": "halt"}).status_code == 404


def test_audit_and_events_are_searchable_and_export_as_csv(medlb, backends):
    lb, _ = start(medlb, backends)
    lb.set_state("pacs", "A", "drain")
    lb.set_state("pacs", "B", "halt")
    found = lb.api("GET", "/api/v1/audit?q=pacs/B").json()
    assert [e["target"] for e in found] == ["pacs/B"]
    exported = lb.api("GET", "/api/v1/audit?format=csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["target"] for r in rows[:2]] == ["pacs/B", "pacs/A"]  # newest first
    events = lb.api("GET", "/api/v1/events?service=pacs&q=halt&format=csv")
    rows = list(csv.DictReader(io.StringIO(events.text)))
    assert rows and all(r["service"] == "pacs" for r in rows) and rows[0]["new"] == "halt"


def test_events_and_audit_say_what_happened_in_words(medlb, backends):
    vip, a, closed = free_ports(3)
    backends.start("A", a)
    lb = medlb([service("pacs", vip, [server("A", a), server("D", closed)])])
    lb.wait_health("pacs", "D", "down", 15)
    assert lb.set_state("pacs", "D", "drain").status_code == 200

    # The last change of any kind: the operator's drain, not the health check before it.
    last = lb.server("pacs", "D")["last_change"]
    assert (last["kind"], last["who"]) == ("state", "admin-token")
    assert last["text"] == "Server D set to drain by admin-token (was online): no new work, open connections go on"
    events = lb.api("GET", "/api/v1/events?service=pacs").json()
    assert [e["text"] for e in events[:2]] == [last["text"], "Server D is down: " + events[1]["reason"]]
    assert events[0]["kind"] == "state" and events[0]["new"] == "drain"  # the structured fields stay

    entry = lb.api("GET", "/api/v1/audit").json()[0]
    assert entry["text"] == "Set server D of pacs to drain (was online)"
    assert entry["detail"] == {"from": "online", "to": "drain"}  # the JSON stays in the API
    audit_rows = list(csv.DictReader(io.StringIO(lb.api("GET", "/api/v1/audit?format=csv").text)))
    assert audit_rows[0]["text"] == entry["text"]
    event_rows = list(csv.DictReader(io.StringIO(lb.api("GET", "/api/v1/events?format=csv").text)))
    assert event_rows[0]["new"] == "drain" and event_rows[0]["reason"] == ""  # not "'"
    assert event_rows[0]["text"] == last["text"]


def test_config_api_masks_secrets_validates_like_check_and_applies(medlb, backends):
    lb, _ = start(medlb, backends)
    shown = lb.api("GET", "/api/v1/config").json()["config"]
    assert shown["admin"]["token"] == "********"
    assert all(u["password_hash"] == "********" for u in shown["admin"]["users"])
    assert TOKEN not in str(shown)
    text = lb.config_path.read_text()
    bad = lb.api("POST", "/api/v1/config/validate", json={"text": text.replace("servers:", "servrs:", 1)}).json()
    assert not bad["valid"] and any("servrs" in p for p in bad["problems"])
    good = lb.api("POST", "/api/v1/config/validate", json={"text": text}).json()
    advisories = good.pop("advisories")  # they depend on this host's open-file limit
    assert good == {"valid": True, "problems": [], "problems_at": [], "services": ["pacs"], "diff": ""}
    assert isinstance(advisories, list)
    refused = lb.api("POST", "/api/v1/config/apply", json={"text": "services: 3\n"})
    assert refused.status_code == 422 and lb.config_path.read_text() == text
    applied = lb.api("POST", "/api/v1/config/apply", json={"text": text.replace("name: pacs", "name: pacs2")})
    assert applied.status_code == 200, applied.text
    assert applied.json()["services"] == ["pacs2"]


def test_https_is_the_default_with_a_self_signed_certificate(medlb, backends):
    lb, _ = start(medlb, backends, tls="auto")
    assert lb.cert_path.exists()
    assert (lb.cert_path.parent / "key.pem").stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(lb.cert_path))
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    verified = httpx.get(f"https://{LOOPBACK}:{lb.admin_port}/healthz", verify=context, timeout=10)
    assert verified.status_code == 200
    assert "sha256_fingerprint" in lb.log()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{LOOPBACK}:{lb.admin_port}/healthz", timeout=5)
    web = browser(lb)
    answer = login(web, "olga")
    assert answer.status_code == 200
    assert web.get("/api/v1/services").status_code == 200  # the Secure cookie came back over HTTPS


def test_the_pages_background_refreshes_do_not_keep_a_session_alive(medlb, backends):
    lb, _ = start(medlb, backends, session_timeout="5s")
    web = browser(lb)
    answer = login(web, "olga")
    web.cookies.set("medlb_session", answer.headers["set-cookie"].split(";")[0].split("=", 1)[1])
    time.sleep(1)
    assert web.get("/api/v1/services", headers={"X-Medlb-Background": "1"}).status_code == 200
    time.sleep(4.5)  # 5.5 s since the person's last own request: past the idle timeout
    assert web.get("/api/v1/services", headers={"X-Medlb-Background": "1"}).status_code == 401


# --- under abuse -------------------------------------------------------------------
# Raw sockets, opened before a burst is sent, so that a burst reaches medlb at once.

MiB = 1024 * 1024


def admin_socket(lb, source: str = LOOPBACK) -> socket.socket:
    """A connection to the admin listener from `source` (any 127.x.y.z is a distinct
    client address on loopback)."""
    return socket.create_connection((LOOPBACK, lb.admin_port), timeout=30, source_address=(source, 0))


def login_request(name: str, password: str) -> bytes:
    body = json.dumps({"name": name, "password": password}).encode()
    return (f"POST /api/v1/login HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def answer_head(sock: socket.socket) -> tuple[int, str]:
    """The status and head of the answer on `sock` (read up to the blank line)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 "), f"no HTTP answer: {data[:200]!r}"
    return int(head.split()[1]), head


def send_each(sockets: list[socket.socket], requests: list[bytes]) -> None:
    """Send every request on its own (already open) connection."""
    for sock, request in zip(sockets, requests, strict=True):
        sock.sendall(request)


def statuses(sockets: list[socket.socket]) -> list[int]:
    """Every connection's answer status; the connections are closed."""
    try:
        return [answer_head(sock)[0] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def metric(lb, name: str, **labels: str) -> float:
    """The sum of a /metrics sample's values whose labels match; the metric must exist."""
    text = lb.api("GET", "/metrics").text
    values = [float(value) for found, value in re.findall(rf"^{name}(?:{{(.*)}})? (\S+)$", text, re.M)
              if all(f'{k}="{v}"' in found for k, v in labels.items())]
    assert values, f"/metrics has no {name} {labels}"
    return sum(values)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_a_right_password_sent_within_a_burst_of_guesses_does_not_log_in(medlb, backends):
    lb, _ = start(medlb, backends, lockout={"attempts": 20, "window": "10m", "duration": "10m"})
    guessers, right = [admin_socket(lb) for _ in range(39)], admin_socket(lb)
    send_each(guessers, [login_request("olga", f"guess-{i}") for i in range(39)])
    time.sleep(0.1)  # the right password follows 100 ms into the burst (no timing is asserted)
    right.sendall(login_request("olga", PASSWORDS["olga"]))
    status, head = answer_head(right)
    right.close()
    assert status == 429 and "set-cookie" not in head.lower()
    assert set(statuses(guessers)) <= {401, 429}
    assert "login" not in [e["action"] for e in lb.api("GET", "/api/v1/audit?limit=100").json()]
    # The name stays locked: every guess of the burst counted, checked or not.
    assert login(browser(lb), "olga").status_code == 429


def test_a_burst_of_guesses_costs_at_most_the_lockout_attempts_in_password_checks(medlb, backends):
    lb, _ = start(medlb, backends, lockout={"attempts": 5, "window": "10m", "duration": "10m"})
    control = psutil.Process(lb.proc.pid)
    spent = cpu_seconds(control)
    for i in range(3):  # what one wrong password costs, from three addresses (nothing locks)
        calibration = admin_socket(lb, f"127.0.0.{20 + i}")
        send_each([calibration], [login_request("vera", "wrong")])
        assert statuses([calibration]) == [401]
    one_check = (cpu_seconds(control) - spent) / 3

    spent = cpu_seconds(control)
    guessers = [admin_socket(lb) for _ in range(40)]
    send_each(guessers, [login_request("olga", f"guess-{i}") for i in range(40)])
    codes = statuses(guessers)
    spent = cpu_seconds(control) - spent

    assert set(codes) <= {401, 429} and codes.count(429) >= 35
    # 40 checks would cost 40 times one; the lock-out allows 5, and nothing else costs much.
    assert spent < 20 * one_check, f"the burst cost {spent:.2f} s of CPU; one check {one_check:.3f} s"
    assert metric(lb, "medlb_admin_password_checks_total") <= 3 + 5


def test_health_checks_run_on_while_many_addresses_guess_at_once(medlb, backends):
    lb, _ = start(medlb, backends)
    lb.wait_health("pacs", "A", "up", 15)
    checks_of_a = metric(lb, "medlb_health_checks_total", server="A", result="ok")
    guessers = [admin_socket(lb, f"127.0.0.{10 + i}") for i in range(40)]
    send_each(guessers, [login_request(f"nobody{i}", "wrong") for i in range(40)])
    # The control process answers and checks its servers meanwhile.
    assert httpx.get(f"{lb.base_url}/healthz", timeout=10).status_code == 200
    wait_until(lambda: metric(lb, "medlb_health_checks_total", server="A", result="ok") >= checks_of_a + 3, 15,
               what="A's health checks to go on")
    assert set(statuses(guessers)) <= {401, 429}
    # At most admin.password_checks.at_once run together; the others are refused unchecked.
    assert 1 <= metric(lb, "medlb_admin_password_checks_total") < 40
    assert lb.server("pacs", "A")["health"] == "up"



def upload(lb, path: str, size: int, headers: dict[str, str] | None = None, chunked: bool = False) -> int:
    """POST `size` bytes to the admin listener as a client would: the whole body is sent
    (from another thread) unless medlb answers and closes first. The answer's status."""
    sock = admin_socket(lb)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n{extra}{framing}\r\n\r\n".encode())

    def send_body() -> None:
        piece = b"x" * MiB
        try:
            for _ in range(size // MiB):
                sock.sendall((f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # medlb answered and closed: what it should do

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    try:
        return answer_head(sock)[0]
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the sender if it is still sending
        except OSError:
            pass
        sender.join(30)
        sock.close()


def test_huge_bodies_are_refused_before_they_are_read(medlb, backends):
    lb, _ = start(medlb, backends)
    assert login(browser(lb), "olga", "warm-up").status_code == 401  # the first request's code is loaded
    before = peak_rss_bytes(lb.proc.pid)
    codes = [upload(lb, "/api/v1/login", 100 * MiB),
             upload(lb, "/api/v1/login", 100 * MiB, chunked=True),
             upload(lb, "/api/v1/services/pacs/servers/A/state", 100 * MiB),  # no credentials
             upload(lb, "/api/v1/config/apply", 100 * MiB, chunked=True),
             upload(lb, "/api/v1/config/apply", 100 * MiB, {"Authorization": f"Bearer {TOKEN}"})]
    grown = peak_rss_bytes(lb.proc.pid) - before
    assert codes == [413, 413, 401, 401, 413]
    assert grown < 8 * MiB, f"the control process grew by {grown / MiB:.0f} MiB"
    assert lb.server("pacs", "A")["state"] == "online"


def test_admin_bodies_are_capped_at_the_edge(medlb, backends):
    lb, _ = start(medlb, backends, max_config_body="256KiB")
    web = browser(lb)

    def login_body(size: int) -> httpx.Response:
        pad = size - len(json.dumps({"name": "olga", "password": ""}))
        return web.post("/api/v1/login", content=json.dumps({"name": "olga", "password": "p" * pad}))

    assert login_body(64 * 1024).status_code == 401  # admin.max_body, 64 KiB: read and checked
    refused = login_body(64 * 1024 + 1)
    assert refused.status_code == 413 and "admin.max_body" in refused.json()["error"]

    text = lb.config_path.read_text().replace("name: pacs", "name: pacs2")

    def apply(size: int) -> httpx.Response:
        pad = size - len(json.dumps({"text": text + "#\n"}))
        return lb.api("POST", "/api/v1/config/apply", content=json.dumps({"text": text + "#" + "p" * pad + "\n"}))

    too_big = apply(256 * 1024 + 1)
    assert too_big.status_code == 413 and "admin.max_config_body" in too_big.json()["error"]
    assert "pacs2" not in lb.config_path.read_text()
    applied = apply(256 * 1024)
    assert applied.status_code == 200, applied.text
    assert applied.json()["services"] == ["pacs2"]
