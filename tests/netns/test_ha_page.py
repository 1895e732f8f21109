"""The clustered pair on the web page, in Debian's Chromium driven by Playwright: what an
operator reads on the overview of each node, before, during and after a split brain.

The nodes' admin API listens inside their network namespaces, which a browser in the
host's namespace cannot reach, so Chromium runs inside the active node's namespace
(`ip netns exec` execs it, keeping the pipe Playwright talks over). From there it
opens this node's page on loopback and the peer's over the pair's segment.
Screenshots go to test-artifacts/web/ (their paths are printed).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import need_tool
from medlb.passwords import hash_password
from medlb_node import ADMIN_PORT, MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from test_ha_operations import heal_vrrp, split_brain
from test_ha_pair import admin_fingerprint, elect_pair, name_of, pair, wait_role  # noqa: F401 (pair: a fixture)
from topology import BALANCER, BALANCER2

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
OPERATOR, PASSWORD = "olga", "operator-pass-1"
USERS = [{"name": OPERATOR, "password_hash": hash_password(PASSWORD, n=2**14), "role": "operator"}]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ADDRESSES = {"lb-a": BALANCER, "lb-b": BALANCER2}


def with_users(nodes: dict[str, MedlbNode]) -> None:
    """The page needs a user with a password; the same users in both nodes' file."""
    for node in nodes.values():
        node.config = {**node.config, "admin": {**node.config["admin"], "users": USERS}}
        node.write_config()


def chromium_in(node: MedlbNode, tmp_path: Path) -> Path:
    """An executable that runs Debian's Chromium inside the node's namespace."""
    wrapper = tmp_path / f"chromium-in-{node.node.netns}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {node.node.netns} {need_tool("chromium")} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def overview(browser, url: str):
    """A logged-in operator's overview of the node at `url`; its pair line."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(url + "/")
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#overview-summary")).to_be_visible()
    return page, page.locator("#pair-summary")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def wait_split_brain(node: MedlbNode, timeout: float = 15) -> dict:
    """The episode the node recorded (GET /api/v1/ha), once it has one."""
    deadline = time.monotonic() + timeout
    while not (episode := node.api("GET", "/api/v1/ha")[1]["split_brain"]):
        assert time.monotonic() < deadline, f"{name_of(node)} shows no split brain:\n{node.log()[-3000:]}"
        time.sleep(0.1)
    return episode


def test_the_overview_shows_the_pair_in_sync_and_when_a_split_brain_happened_and_for_how_long(pair, tmp_path):
    topo, nodes = pair
    need_tool("chromium")
    with_users(nodes)
    active, passive = elect_pair(topo, nodes)
    this, peer = name_of(active), name_of(passive)
    expect.set_options(timeout=20000)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_in(active, tmp_path)), headless=True,
                                             args=ARGS)
        try:
            page, line = overview(browser, f"https://127.0.0.1:{ADMIN_PORT}")
            # Each node knows its role and its peer's, and the two carry one config and
            # one set of operator decisions; the peer's pinned certificate is named.
            expect(line).to_have_text(
                f"Pair: this node ({this}) ACTIVE, {peer} PASSIVE, config in sync, decisions in sync; "
                f"peer certificate SHA-256 {admin_fingerprint(passive)}.")
            expect(line).not_to_have_class(re.compile(r"\bbad\b"))
            screenshot(page, "pair-overview.png")

            # VRRP dropped: both nodes hold the VIPs, and the page says so.
            split_brain(topo, active, passive)
            expect(line).to_contain_text(f"Pair: this node ({this}) ACTIVE, {peer} ACTIVE, ")
            expect(line).to_have_class(re.compile(r"\bbad\b"))  # two active nodes are a problem: in red
            expect(line).to_have_css("color", "rgb(180, 35, 24)")
            screenshot(page, "pair-split-brain.png")
            heal_vrrp(active)

            # Healed: the higher priority (lb-a) alone keeps the VIPs, and each node's page
            # tells when the split brain began, how long it lasted and who kept the VIPs.
            wait_role(nodes["lb-b"], "BACKUP")
            wait_role(nodes["lb-a"], "MASTER")
            roles = {"lb-a": "ACTIVE", "lb-b": "PASSIVE"}
            for node, view in ((active, page), (passive, None)):
                name, other = name_of(node), name_of(passive if node is active else active)
                episode = wait_split_brain(node)
                if view is None:
                    view, _ = overview(browser, f"https://{ADDRESSES[name]}:{ADMIN_PORT}")
                shown = view.locator("#pair-summary")
                expect(shown).to_contain_text("Last split brain (both nodes active): ")
                expect(shown).not_to_have_class(re.compile(r"\bbad\b"))
                expect(shown).to_contain_text(f"Pair: this node ({name}) {roles[name]}, {other} {roles[other]}, "
                                              "config in sync, decisions in sync;")
                text = shown.inner_text()
                found = re.search(r"Last split brain \(both nodes active\): (.+?)( or earlier)?, for ([\d.]+) s; "
                                  r"this node (kept the VIPs|gave the VIPs up)\.$", text)
                assert found, text
                assert float(found[3]) == episode["duration"] > 0, (text, episode)
                assert (found[2] is None) == episode["start_known"], (text, episode)
                assert found[4] == ("kept the VIPs" if name == "lb-a" else "gave the VIPs up"), text
                print(f"{name}: {text}")
                screenshot(view, f"pair-after-split-brain-{name}.png")
        finally:
            browser.close()
