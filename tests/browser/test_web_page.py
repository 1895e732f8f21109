"""The web page in Debian's Chromium, driven by Playwright, against a real medlb over
HTTPS (the default, self-signed): log in, the overview, server and pool actions with a
real client's connections, live updates, the audit, viewers, CSRF, cookie flags and
lock-out. Every request the browser makes is recorded: none may leave medlb's origin.
Screenshots go to test-artifacts/web/ (their paths are printed)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import need_tool
from helpers import LOOPBACK, TOKEN, Backends, MedlbFactory, free_port, free_ports, server, service, wait_until, who_answers
from medlb.passwords import hash_password

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
PASSWORDS = {"olga": "operator-pass-1", "vera": "viewer-pass-1", "adam": "admin-pass-1"}
USERS = [{"name": name, "password_hash": hash_password(PASSWORDS[name], n=2**14), "role": role}
         for name, role in (("olga", "operator"), ("vera", "viewer"), ("adam", "admin"))]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def start_medlb(factory: MedlbFactory, group: Backends, workers: int = 1, open_files: tuple[int, int] | None = None,
                **admin_extra):
    vip, a, b, c, closed = free_ports(5)
    for name, port in (("A", a), ("B", b), ("C", c)):
        group.start(name, port)
    admin_port = free_port()
    lb = factory([
        service("pacs", vip, [server("A", a), server("B", b)], backup=[server("C", c)], failback="manual"),
        service("ris", free_port(), [server("D", closed)]),
    ], start=False, admin={"listen": f"{LOOPBACK}:{admin_port}", "token": TOKEN, "users": USERS, **admin_extra},
        workers=workers)
    lb.admin_port, lb.scheme = admin_port, "https"
    lb.base_url = f"https://{LOOPBACK}:{admin_port}"
    lb.client = httpx.Client(base_url=lb.base_url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=10)
    lb.start(open_files=open_files)
    for name in "ABC":
        lb.wait_health("pacs", name, "up", 15)
    lb.wait_health("ris", "D", "down", 15)
    return lb, vip


@pytest.fixture(scope="module")
def chromium():
    need_tool("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    group, factory = Backends(), MedlbFactory(tmp_path_factory.mktemp("web"))
    try:
        yield start_medlb(factory, group)
    finally:
        factory.stop_all()
        group.stop_all()


class Visit:
    """A browser context that records every request it makes."""

    def __init__(self, chromium, lb):
        self.lb = lb
        self.context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.unauthorized: list[str] = []
        self.context.on("response", lambda response: response.status == 401 and self.unauthorized.append(response.url))
        self.page = self.context.new_page()
        self.page.set_default_timeout(20000)
        expect.set_options(timeout=20000)

    def login(self, name: str, password: str | None = None) -> None:
        page = self.page
        page.goto(self.lb.base_url + "/")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(password or PASSWORDS[name])
        page.get_by_role("button", name="Log in").click()

    def foreign_requests(self) -> list[str]:
        own = urlsplit(self.lb.base_url).netloc
        return [url for url in self.requests if not url.startswith("data:") and urlsplit(url).netloc != own]

    def confirm(self, expected_text: str) -> None:
        dialog = self.page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(expected_text)
        self.page.locator("#confirm-ok").click()
        expect(dialog).to_be_hidden()

    def close(self) -> None:
        self.context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def state_cell(page, server_name: str):
    return page.locator(f"tr[data-server='{server_name}'] td[data-col='state']")


def test_operator_halts_a_server_fails_the_pool_over_and_back_and_sees_the_audit(chromium, site):
    lb, vip = site
    operator, viewer = Visit(chromium, lb), Visit(chromium, lb)
    try:
        operator.login("olga")
        page = operator.page
        rows = page.locator("#services tbody tr")
        expect(rows).to_have_count(2)
        # Problems first: the service with no server up is the top row, red and in words.
        expect(rows.first).to_have_attribute("data-service", "ris")
        expect(rows.first).to_have_class(re.compile(r"\bbad\b"))
        expect(rows.first).to_contain_text("DOWN: no server up")
        expect(rows.nth(1)).to_contain_text("OK")
        expect(page.locator("#live")).to_have_text("live")
        screenshot(page, "overview.png")

        viewer.login("vera")
        viewer.page.goto(lb.base_url + "/#/service/pacs")
        expect(state_cell(viewer.page, "A")).to_have_text("online")

        page.get_by_role("link", name="pacs").click()
        expect(page.locator("#view h1")).to_contain_text("pacs")
        screenshot(page, "service-pacs.png")

        # Halt one server: the confirmation names the consequence.
        page.locator("button[data-action='halt'][data-server='A']").click()
        operator.confirm("A will take no new connections")
        expect(state_cell(page, "A")).to_contain_text("halt")
        assert lb.server("pacs", "A")["state"] == "halt"
        assert {who_answers(vip) for _ in range(6)} == {"B"}
        # The other person's page follows without a reload.
        expect(state_cell(viewer.page, "A")).to_contain_text("halt")
        page.locator("button[data-action='online'][data-server='A']").click()
        operator.confirm("A will take new connections again")
        expect(state_cell(page, "A")).to_have_text("online")

        # The manual failover: halt the whole primary pool.
        page.locator("button[data-pool-action='halt-primary']").click()
        operator.confirm("New work goes to the backup cluster: C")
        expect(page.locator("#view h1")).to_contain_text("FAILED OVER")
        assert lb.service("pacs")["active_pool"] == "backup"
        assert {who_answers(vip) for _ in range(6)} == {"C"}
        expect(viewer.page.locator("#view h1")).to_contain_text("FAILED OVER")
        # And back: primaries online, then failback (failback: manual).
        page.locator("button[data-pool-action='online-primary']").click()
        operator.confirm("traffic stays on the backup until you press Failback")
        page.locator("button[data-pool-action='failback']").click()
        operator.confirm("goes to the primary servers")
        expect(page.locator("#view h1")).to_contain_text("OK")
        wait_until(lambda: who_answers(vip) in ("A", "B"), 10, what="the primaries to answer again")
        screenshot(page, "service-pacs-after.png")

        page.get_by_role("link", name="Audit").click()
        audit = page.locator("#audit tbody")
        expect(audit.locator("tr").first).to_contain_text("failback")
        expect(audit).to_contain_text("set_pool_state")
        expect(audit).to_contain_text("olga")
        page.get_by_label("Search audit").fill("pacs/A")
        page.get_by_role("button", name="Search").click()
        expect(audit.locator("tr")).to_have_count(2)
        with page.expect_download() as download:
            page.locator("#export").click()
        assert download.value.suggested_filename == "medlb-audit.csv"
        screenshot(page, "audit.png")
        page.get_by_role("link", name="Events").click()
        events = page.locator("#events tbody")
        expect(events).to_contain_text("no primary server is online and up")  # the reason, in words
        expect(events).to_contain_text("state of A")

        assert operator.foreign_requests() == [] and viewer.foreign_requests() == []
        assert any("/api/v1/stream" in url for url in operator.requests)
    finally:
        operator.close()
        viewer.close()


def test_the_overview_says_how_many_workers_run_and_when_one_restarted(chromium, tmp_path):
    group, factory = Backends(), MedlbFactory(tmp_path)
    try:
        lb, _ = start_medlb(factory, group, workers=2)
        visit = Visit(chromium, lb)
        visit.login("vera")
        summary = visit.page.locator("#workers-summary")
        expect(summary).to_have_text("Data plane: 2 workers, all running.")

        os.kill(lb.api("GET", "/api/v1/workers").json()["processes"][0]["pid"], signal.SIGKILL)
        wait_until(lambda: all(p["alive"] and p["restarts"] == 1 for p in
                               lb.api("GET", "/api/v1/workers").json()["processes"][:1]), 10, what="a new worker 0")
        visit.page.reload()
        expect(summary).to_contain_text("1 restarted since start")
        visit.context.close()
    finally:
        factory.stop_all()
        group.stop_all()


def test_a_viewer_has_no_buttons_and_the_api_refuses_it(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        visit.login("vera")
        page = visit.page
        expect(page.locator("#who")).to_have_text("vera (viewer)")
        page.goto(lb.base_url + "/#/service/pacs")
        expect(state_cell(page, "A")).to_be_visible()
        assert page.locator("button[data-action]").count() == 0
        assert page.locator("button[data-pool-action]").count() == 0
        expect(page.locator("#nav-config")).to_be_hidden()
        status = page.evaluate("""async () => {
            const me = await (await fetch('/api/v1/session')).json();
            const r = await fetch('/api/v1/services/pacs/servers/A/state', {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
                body: JSON.stringify({state: 'halt'})});
            return r.status; }""")
        assert status == 403
        assert lb.server("pacs", "A")["state"] == "online"
        assert visit.foreign_requests() == []
    finally:
        visit.close()


def test_csrf_token_and_cookie_flags(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        visit.login("olga")
        expect(visit.page.locator("#who")).to_have_text("olga (operator)")
        cookie = next(c for c in visit.context.cookies() if c["name"] == "medlb_session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert visit.page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        answer = visit.page.evaluate("""async () => {
            const r = await fetch('/api/v1/services/pacs/servers/B/state', {method: 'POST',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify({state: 'halt'})});
            return [r.status, await r.text()]; }""")
        assert answer[0] == 403 and "CSRF" in json.loads(answer[1])["error"]
        assert lb.server("pacs", "B")["state"] == "online"
        visit.page.get_by_role("button", name="Log out").click()
        expect(visit.page.locator("#login-note")).to_have_text("You have logged out.")  # a note, not an error
        expect(visit.page.locator("#login-error")).to_have_text("")
        assert visit.page.evaluate("fetch('/api/v1/services').then(r => r.status)") == 401
    finally:
        visit.close()


def test_an_admin_edits_the_file_on_disk_sees_problems_at_their_lines_and_applies(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        visit.login("adam")
        page = visit.page
        page.get_by_role("link", name="Config").click()
        on_disk = lb.config_path.read_text()
        editor = page.get_by_label("Config file (YAML), with line numbers")
        expect(editor).to_have_value(re.compile(r'token: "\*{8}"'))
        shown = editor.input_value()
        assert TOKEN not in page.content() and USERS[0]["password_hash"] not in page.content()
        # The file as written: every line where it is on disk, secrets masked in place.
        assert len(shown.splitlines()) == len(on_disk.splitlines())
        assert [n for n, (a, b) in enumerate(zip(shown.splitlines(), on_disk.splitlines()), 1) if a != b] == [
            n for n, line in enumerate(on_disk.splitlines(), 1) if "token:" in line or "password_hash:" in line]
        gutter = page.locator("#config-gutter div")
        expect(gutter).to_have_count(len(on_disk.split("\n")))  # as editors count: the empty line after the last
        expect(gutter.nth(0)).to_have_text("1")
        # A typo: the problem is marked at its line, beside the line itself and in the list.
        line = next(n for n, text in enumerate(shown.splitlines(), 1) if "name: ris" in text)
        editor.fill(shown.replace("name: ris", "nme: ris"))
        page.locator("#config-validate").click()
        expect(page.locator("#config-result")).to_contain_text("invalid")
        expect(page.locator(f"#config-gutter div.problem[data-line='{line}']")).to_have_text(str(line))
        expect(page.locator(f"#config-marks div.problem[data-line='{line}'] .inline-problem")).to_contain_text(
            "unknown key")
        expect(page.locator(f"#config-problems li[data-line='{line}']").first).to_contain_text(f"Line {line}")
        expect(page.locator("#config-diff span.del")).to_have_text(["-- name: ris"])  # the diff from the file on disk
        expect(page.locator("#config-diff span.add")).to_have_text(["+- nme: ris"])
        screenshot(page, "config-problem.png")
        # Apply a valid edit, masks left in: confirmed, written with the secrets as they were, reloaded.
        editor.fill(shown.replace("name: ris", "name: ris-west"))
        page.locator("#config-apply").click()
        visit.confirm("services: pacs, ris-west")
        wait_until(lambda: "ris-west" in [s["name"] for s in lb.api("GET", "/api/v1/services").json()], 30,
                   what="the applied config to run")
        assert lb.config_path.read_text() == on_disk.replace("name: ris", "name: ris-west")
        entry = lb.api("GET", "/api/v1/audit?q=reload").json()[0]
        assert (entry["who"], entry["detail"]["result"]) == ("adam", "ok")
        assert visit.foreign_requests() == []
    finally:
        visit.close()


def test_the_config_page_shows_advisories_and_still_applies(chromium, tmp_path):
    """Two services at the default max_connections (20000 together) on a host whose
    open-file limit (1024) holds far fewer: advised on the page, never refused."""
    group, factory = Backends(), MedlbFactory(tmp_path)
    try:
        lb, _ = start_medlb(factory, group, open_files=(1024, 1024))
        visit = Visit(chromium, lb)
        visit.login("adam")
        page = visit.page
        page.get_by_role("link", name="Config").click()
        expect(page.locator("ul.advisories")).to_contain_text("max_connections adds up to 20000 over all services")
        page.locator("#config-text").fill(lb.config_path.read_text().replace("name: ris", "name: ris-west"))
        page.locator("#config-validate").click()
        expect(page.locator("#config-result")).to_contain_text("valid")
        expect(page.locator("#config-result ul.advisories")).to_contain_text("max_connections adds up to 20000")
        page.locator("#config-apply").click()
        visit.confirm("services: pacs, ris-west")
        expect(page.locator("#toast")).to_contain_text("with 1 advisory(ies)")
        wait_until(lambda: "ris-west" in [s["name"] for s in lb.api("GET", "/api/v1/services").json()], 30,
                   what="the applied config to run")
        visit.close()
    finally:
        factory.stop_all()
        group.stop_all()


def test_wrong_passwords_lock_out_after_the_configured_count(chromium, tmp_path):
    group, factory = Backends(), MedlbFactory(tmp_path)
    try:
        lb, _ = start_medlb(factory, group, lockout={"attempts": 3, "window": "10m", "duration": "10m"})
        visit = Visit(chromium, lb)
        error = visit.page.locator("#login-error")
        visit.page.goto(lb.base_url + "/")
        expect(visit.page.get_by_label("User name")).to_be_visible()
        visit.page.wait_for_load_state("networkidle")
        assert visit.unauthorized == []  # no 401 in the browser's console on the first load
        expect(error).to_have_text("")
        visit.login("olga", "wrong-1")
        expect(error).to_have_text("wrong user name or password")
        for attempt in ("wrong-2", "wrong-3"):
            visit.page.get_by_label("Password").fill(attempt)
            visit.page.get_by_role("button", name="Log in").click()
        expect(error).to_contain_text("locked out for 10 min")
        visit.page.get_by_label("Password").fill(PASSWORDS["olga"])
        visit.page.get_by_role("button", name="Log in").click()
        expect(error).to_contain_text("locked out")
        expect(visit.page.locator("#top")).to_be_hidden()
        visit.close()
    finally:
        factory.stop_all()
        group.stop_all()


def test_keyboard_only_on_a_tablet_sized_screen(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        page = visit.page
        page.set_viewport_size({"width": 768, "height": 1024})
        page.goto(lb.base_url + "/")
        # Log in with the keyboard alone: the name field has focus, Tab, Enter.
        expect(page.get_by_label("User name")).to_be_focused()
        page.keyboard.type("olga")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORDS["olga"])
        page.keyboard.press("Enter")
        expect(page.locator("#services tbody tr")).to_have_count(2)
        screenshot(page, "tablet-overview.png")
        page.goto(lb.base_url + "/#/service/pacs")
        halt = page.locator("button[data-action='halt'][data-server='B']")
        halt.focus()
        page.keyboard.press("Enter")
        expect(page.locator("dialog#confirm")).to_be_visible()
        expect(page.locator("#confirm-ok")).to_be_focused()
        page.keyboard.press("Escape")  # cancel: nothing changes
        expect(page.locator("dialog#confirm")).to_be_hidden()
        assert lb.server("pacs", "B")["state"] == "online"
        box = halt.bounding_box()
        assert box is not None and box["height"] >= 40  # a finger-sized target
        screenshot(page, "tablet-service-pacs.png")
        assert visit.foreign_requests() == []
    finally:
        visit.close()


def status_cell(page, server_name: str):
    return page.locator(f"tr[data-server='{server_name}'] td[data-col='status']")


def test_each_server_says_what_the_scheduler_does_with_it(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    pool = "/api/v1/services/pacs/pools/default/state"
    try:
        visit.login("vera")
        page = visit.page
        row = page.locator("#services tbody tr[data-service='pacs']")
        expect(row.locator("td[data-col='up']")).to_have_text("2/3, 1 standby")
        expect(row).to_contain_text("OK")  # an idle backup is no problem
        page.goto(lb.base_url + "/#/service/pacs")
        expect(status_cell(page, "A")).to_have_text("takes work")
        expect(status_cell(page, "C")).to_have_text("standby (backup cluster)")

        # Failed over, then the primaries back: with failback manual they wait for it.
        assert lb.api("POST", pool, json={"state": "halt"}).status_code == 200
        assert lb.api("POST", pool, json={"state": "online"}).status_code == 200
        expect(status_cell(page, "A")).to_have_text("ready: waiting for failback")
        expect(status_cell(page, "C")).to_have_text("takes work")
        expect(page.locator("dl.summary")).to_contain_text("1/3, 2 standby")
        screenshot(page, "service-pacs-waiting-for-failback.png")
    finally:
        lb.api("POST", "/api/v1/services/pacs/failback", json={})
        visit.close()


def test_events_audit_and_the_last_change_read_as_sentences(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        assert lb.set_state("pacs", "B", "drain").status_code == 200
        visit.login("vera")
        page = visit.page
        page.goto(lb.base_url + "/#/service/pacs")
        last = page.locator("tr[data-server='B'] td[data-col='last-change']")
        expect(last).to_contain_text("Server B set to drain by admin-token (was online)")
        expect(page.locator("#events")).to_contain_text("Server B set to drain by admin-token")

        page.get_by_role("link", name="Audit").click()
        detail = page.locator("#audit tbody tr", has_text="pacs/B").first.locator("td[data-col='detail']")
        expect(detail).to_have_text("Set server B of pacs to drain (was online)")
        screenshot(page, "audit-sentences.png")
    finally:
        lb.set_state("pacs", "B", "online")
        visit.close()


def test_each_protocol_page_shows_its_facts_and_last_failures(chromium, tmp_path):
    """A dicom, an http and an mllp service whose only server is down: a refused
    association, a 503 and an AE from medlb show on their pages, without any data."""
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from helpers import http_service

    group, factory = Backends(), MedlbFactory(tmp_path)
    pacs, web, adt, closed = free_ports(4)
    tcp_check = {"type": "tcp", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 1}
    admin_port = free_port()
    lb = factory([
        service("pacs", pacs, [server("pacs1", closed, ae_title="PACS1")], mode="dicom", health=tcp_check,
                dicom={"ae_title": "MEDLB", "allowed_calling_aes": ["CT*"]}),
        http_service("api", web, [server("api1", closed)], health=tcp_check),
        service("adt", adt, [server("engine1", closed)], mode="mllp", health=tcp_check),
    ], start=False, admin={"listen": f"{LOOPBACK}:{admin_port}", "token": TOKEN, "users": USERS})
    lb.admin_port, lb.base_url = admin_port, f"https://{LOOPBACK}:{admin_port}"
    lb.client = httpx.Client(base_url=lb.base_url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=10)
    try:
        lb.start()
        for name, member in (("pacs", "pacs1"), ("api", "api1"), ("adt", "engine1")):
            lb.wait_health(name, member, "down", 15)
        stranger = AE(ae_title="US1")
        stranger.add_requested_context(Verification)
        assert not stranger.associate(LOOPBACK, pacs, ae_title="MEDLB").is_established
        assert httpx.get(f"http://{LOOPBACK}:{web}/", timeout=10).status_code == 503
        with socket.create_connection((LOOPBACK, adt), timeout=10) as sock:
            sock.sendall(b"\x0bMSH|^~\\&|ADT|HOSP|ENG|HOSP|20261130||ADT^A08^ADT_A01|C1|T|2.5.1\rPID|1||M1\r\x1c\r")
            assert b"|AE|" in sock.recv(65536)

        visit = Visit(chromium, lb)
        visit.login("vera")
        page = visit.page
        page.goto(lb.base_url + "/#/service/pacs")
        expect(page.locator("#dicom-facts")).to_contain_text("Allowed calling AEs")
        expect(page.locator("#dicom-facts")).to_contain_text("CT*")
        expect(page.locator("tr[data-server='pacs1'] [data-col='ae-title']")).to_have_text("AE PACS1")
        expect(page.locator("#dicom-rejects")).to_contain_text("calling-ae-not-allowed")
        expect(page.locator("#dicom-last-rejects tbody tr").first).to_contain_text("US1")
        expect(page.locator("#dicom-last-rejects tbody tr").first).to_contain_text("MEDLB")
        screenshot(page, "service-dicom-facts.png")
        page.goto(lb.base_url + "/#/service/api")
        expect(page.locator("#http-classes")).to_contain_text("5xx")
        expect(page.locator("#http-last-errors tbody tr").first).to_contain_text("503")
        expect(page.locator("#http-last-errors tbody tr").first).to_contain_text("no_server")
        page.goto(lb.base_url + "/#/service/adt")
        expect(page.locator("#mllp-naks")).to_contain_text("AE: no server available")
        expect(page.locator("#mllp-last-failures tbody tr").first).to_contain_text("no server available")
        assert "M1" not in page.locator("#view").inner_text()  # no field of the message
        visit.close()
    finally:
        factory.stop_all()
        group.stop_all()


def overflowing_tables(page) -> list[str]:
    """The tables whose container must scroll sideways, or whose header cells lie
    (partly) outside the container: columns an operator cannot see."""
    return page.evaluate("""() => [...document.querySelectorAll('.table-wrap')].flatMap((wrap) => {
        const box = wrap.getBoundingClientRect();
        const cut = [...wrap.querySelectorAll('thead th')]
            .filter((th) => { const r = th.getBoundingClientRect(); return r.left < box.left - 1 || r.right > box.right + 1; })
            .map((th) => th.textContent);
        const table = wrap.querySelector('table');
        return wrap.scrollWidth > wrap.clientWidth || cut.length ? [(table.id || table.className) + ': ' + cut.join(', ')] : [];
    })""")


def chart_labels(page) -> list[dict]:
    """Each chart on the page with its time-axis and value-axis labels as text."""
    return page.evaluate("""() => [...document.querySelectorAll('.chart-plot')].map((chart) => ({
        label: chart.getAttribute('aria-label'),
        times: [...chart.querySelectorAll('.time-axis .tick')].map((t) => t.textContent),
        spans: [...chart.querySelectorAll('.time-axis .tick')].map((t) => {
            const r = t.getBoundingClientRect(); return [r.left, r.right]; }),
        plot: (({ left, right }) => [left, right])(chart.querySelector('svg').getBoundingClientRect()),
        values: [...chart.querySelectorAll('.value-axis .tick')].map((t) => t.textContent).filter(Boolean)}))""")


def assert_readable_charts(page, count: int) -> None:
    charts = chart_labels(page)
    assert len(charts) == count, charts
    for chart in charts:
        assert len(chart["times"]) >= 2 and all(re.fullmatch(r"\d{1,2}:\d{2}( [AP]M)?", t) for t in chart["times"]), chart
        assert len(chart["values"]) >= 2 and chart["values"][-1].startswith("0"), chart
        # The times read left to right under the line, oldest first, none on another.
        spans = chart["spans"]
        assert all(left_one[1] <= right_one[0] for left_one, right_one in zip(spans, spans[1:])), chart
        assert chart["plot"][0] - 1 <= spans[0][0] and spans[-1][1] <= chart["plot"][1] + 1, chart


def test_charts_have_a_time_axis_and_values_and_the_tables_fit_1400_px(chromium, site):
    lb, _ = site
    visit = Visit(chromium, lb)
    try:
        visit.page.set_viewport_size({"width": 1400, "height": 900})
        visit.login("olga")  # an operator: the server table has its Actions column too
        page = visit.page
        expect(page.locator("#services tbody tr")).to_have_count(2)
        assert_readable_charts(page, 2)  # one per service
        assert overflowing_tables(page) == []
        # The overview's "Last hour" header lies whole inside its card.
        inside = page.evaluate("""() => {
            const th = [...document.querySelectorAll('#services thead th')].find((h) => h.textContent === 'Last hour');
            const card = th.closest('.table-wrap').getBoundingClientRect(), r = th.getBoundingClientRect();
            return r.left >= card.left && r.right <= card.right && r.top >= card.top && r.bottom <= card.bottom;
        }""")
        assert inside
        screenshot(page, "overview-1400.png")

        page.goto(lb.base_url + "/#/service/pacs")
        expect(page.locator("tr[data-server='A']")).to_be_visible()
        assert_readable_charts(page, 3)  # active, new connections per second, throughput
        assert overflowing_tables(page) == []
        heading = page.get_by_role("heading", name="Last hour")
        expect(heading).to_be_visible()
        screenshot(page, "service-pacs-1400.png")
    finally:
        visit.close()
