"""The config page's API against a running medlb: the file on disk as written with its
secrets masked, Apply keeping the secrets behind the masks, problems at their lines and
the diff from the file on disk."""

from __future__ import annotations

import httpx

from helpers import LOOPBACK, TOKEN, free_ports
from medlb.passwords import hash_password

CI_TOKEN = "ci-token-0123456789abcdef"
PASSWORD = "admin-pass-1"
HASH = hash_password(PASSWORD, n=2**14)


def config_text(admin_port: int, state_dir: str, vip: int, a: int, b: int) -> str:
    """A file as a person writes it: comments, quoting of their own, a secret in a comment."""
    return f"""# medlb on the imaging VIP
admin:
  listen: {LOOPBACK}:{admin_port}
  tls: "off"
  token: {TOKEN}   # the ops token
  tokens:
    - name: ci
      token: "{CI_TOKEN}"
      role: viewer
  users:
    - {{name: adam, password_hash: '{HASH}', role: admin}}
# the ci token before it moved into tokens: {CI_TOKEN}
state_dir: {state_dir}
workers: 1

services:
  - name: pacs
    listen: {LOOPBACK}:{vip}
    servers:
      - {{name: A, address: {LOOPBACK}:{a}}}
      - {{name: B, address: {LOOPBACK}:{b}}}
"""


def start(medlb, backends):
    vip, a, b = free_ports(3)
    backends.start("A", a)
    backends.start("B", b)
    lb = medlb([], start=False)
    text = config_text(lb.admin_port, str(lb.workdir / "state"), vip, a, b)
    lb.write_config(text)
    lb.start()
    return lb, text


def shown(lb) -> dict:
    response = lb.api("GET", "/api/v1/config")
    assert response.status_code == 200, response.text
    for secret in (TOKEN, CI_TOKEN, HASH):
        assert secret not in response.text
    return response.json()


def test_the_page_gets_the_file_as_written_with_every_secret_masked_and_its_lines_kept(medlb, backends):
    lb, text = start(medlb, backends)
    answer = shown(lb)
    masked = answer["text"].splitlines()
    on_disk = text.splitlines()
    assert len(masked) == len(on_disk)
    changed = [(number, line) for number, (line, disk) in enumerate(zip(masked, on_disk), 1) if line != disk]
    assert changed == [(5, '  token: "********"   # the ops token'), (8, '      token: "********"'),
                       (11, "    - {name: adam, password_hash: \"********\", role: admin}"),
                       (12, "# the ci token before it moved into tokens: ********")]
    assert answer["disk_is_running"] is True and answer["problems_at"] == []
    # Edited on disk since the last reload: the page says the file is not what runs.
    lb.config_path.write_text(text.replace("name: pacs", "name: pacs2"))
    assert shown(lb)["disk_is_running"] is False


def test_apply_with_the_masks_left_in_keeps_every_secret_on_disk_as_it_was(medlb, backends):
    lb, text = start(medlb, backends)
    edited = shown(lb)["text"].replace("name: pacs", "name: pacs2")
    applied = lb.api("POST", "/api/v1/config/apply", json={"text": edited})
    assert applied.status_code == 200, applied.text
    assert applied.json()["services"] == ["pacs2"]
    assert lb.config_path.read_text() == text.replace("name: pacs", "name: pacs2")  # byte for byte, comment too
    # The secrets still work after the reload: the ops token, the ci token, adam's password.
    assert lb.api("GET", "/api/v1/services").status_code == 200
    ci = httpx.get(f"{lb.base_url}/api/v1/services", headers={"Authorization": f"Bearer {CI_TOKEN}"}, timeout=10)
    assert ci.status_code == 200
    login = httpx.post(f"{lb.base_url}/api/v1/login", json={"name": "adam", "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text


def test_a_mask_that_stands_for_no_secret_on_disk_is_refused_at_its_line_and_nothing_changes(medlb, backends):
    lb, text = start(medlb, backends)
    masked = shown(lb)["text"]
    # A new token given the mask (copied from the line above): there is no secret to keep.
    edited = masked.replace("      role: viewer\n", "      role: viewer\n    - name: backup\n"
                                                     "      token: \"********\"\n", 1)
    refused = lb.api("POST", "/api/v1/config/apply", json={"text": edited})
    assert refused.status_code == 422
    assert [(p["line"], p["path"]) for p in refused.json()["problems_at"]] == [(11, "admin.tokens[1].token")]
    assert "no secret here to keep" in refused.json()["problems_at"][0]["message"]
    assert lb.config_path.read_text() == text and "********" not in lb.config_path.read_text()


def test_check_places_each_problem_at_its_line_and_diffs_against_the_file_on_disk(medlb, backends):
    lb, _ = start(medlb, backends)
    masked = shown(lb)["text"]
    same = lb.api("POST", "/api/v1/config/validate", json={"text": masked}).json()
    assert same["valid"] and same["diff"] == "" and same["services"] == ["pacs"]
    edited = masked.replace("{name: B, address:", "{name: B, adress:")
    answer = lb.api("POST", "/api/v1/config/validate", json={"text": edited})
    for secret in (TOKEN, CI_TOKEN, HASH):
        assert secret not in answer.text
    checked = answer.json()
    assert not checked["valid"]
    line = next(number for number, x in enumerate(edited.splitlines(), 1) if "adress" in x)
    assert [p["line"] for p in checked["problems_at"]] == [line, line]  # adress unknown, address missing
    assert any("adress" in p["path"] for p in checked["problems_at"])
    changes = [x for x in checked["diff"].splitlines()[2:] if x[:1] in "+-"]
    b_line = next(x for x in masked.splitlines() if "{name: B, address:" in x)
    assert changes == ["-" + b_line, "+" + b_line.replace("address:", "adress:")]
    assert checked["diff"].startswith("--- on disk\n+++ after Apply\n")


def test_check_on_the_page_reads_the_files_and_refuses_a_loop_as_apply_would(medlb, backends):
    """The page's Check says what Apply (a reload) would say: a certificate file that is
    not there, and a server that is medlb's own listen address."""
    lb, text = start(medlb, backends)
    masked = shown(lb)["text"]
    vip = text.split("listen: ")[2].split("\n")[0]
    edited = masked.replace("      - {name: B,", f"      - {{name: self, address: {vip}}}\n      - {{name: B,")
    edited += f"""  - name: web
    mode: http
    listen: {LOOPBACK}:{free_ports(1)[0]}
    tls: {{cert: missing-cert.pem, key: missing-key.pem}}
    servers: [{{name: W, address: "{LOOPBACK}:1"}}]
"""
    answer = lb.api("POST", "/api/v1/config/validate", json={"text": edited}).json()
    assert answer["valid"] is False
    messages = " | ".join(problem["message"] for problem in answer["problems_at"])
    assert "missing-cert.pem" in messages, messages
    assert "loop" in messages or "medlb's own" in messages, messages
    applied = lb.api("POST", "/api/v1/config/apply", json={"text": edited})
    assert applied.status_code == 422
