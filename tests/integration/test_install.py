"""`make install` and `make uninstall` into a temporary DESTDIR: the files a service
needs, a unit systemd accepts, and an installed medlb that runs its installed config.

PID 1 here is not systemd, so `systemctl start medlb` itself cannot be tested: the unit
is checked by `systemd-analyze verify`, and the notifications systemd would receive by a
socket this test binds (tests/integration/test_sd_notify.py for the protocol).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import need_tool
from helpers import LOOPBACK, free_ports
from test_sd_notify import NotifySocket

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/medlb"
UNIT = "usr/local/lib/systemd/system/medlb.service"

pytestmark = pytest.mark.slow


def make(target: str, destdir: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", "--no-print-directory", target, f"DESTDIR={destdir}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env=installed_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def installed_env() -> dict[str, str]:
    """Without the tests' PYTHONPATH, which would put the checkout's source before the
    installed package."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "NOTIFY_SOCKET")}


@pytest.fixture(scope="module")
def dest(tmp_path_factory) -> Path:
    need_tool("make")
    destdir = tmp_path_factory.mktemp("destdir")
    make("install", destdir)
    return destdir


@pytest.fixture
def own_dest(dest, tmp_path) -> Path:
    """A copy of the staged install for a test that changes it (a second install, an
    uninstall), so that the others see the install as made, in any order."""
    copy = tmp_path / "destdir"
    shutil.copytree(dest, copy, symlinks=True)
    return copy


def test_install_lays_out_a_service_that_runs_from_its_own_paths(dest):
    venv = dest / PREFIX.lstrip("/")
    assert (venv / "bin/python").resolve().is_relative_to("/usr"), "the system's python3, not a pyenv or venv"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin/medlb").read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    staged = [path for path in (venv / "bin").iterdir() if path.is_file() and not path.is_symlink()
              and str(dest) in path.read_text(errors="replace")]
    assert not staged, f"files that name the staging folder: {staged}"
    assert os.readlink(dest / "usr/local/bin/medlb") == f"{PREFIX}/bin/medlb"

    config, token = dest / "etc/medlb/medlb.yaml", dest / "etc/medlb/token"
    assert config.read_text() == (ROOT / "packaging/medlb.yaml").read_text()
    assert len(token.read_text().strip()) >= 32 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert (dest / "var/lib/medlb").is_dir()

    unit = (dest / UNIT).read_text()
    for line in ("Type=notify", f"ExecStart={PREFIX}/bin/medlb run -c /etc/medlb/medlb.yaml",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "RuntimeDirectory=medlb",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/medlb /etc/medlb"):
        assert line in unit.splitlines(), line
    assert int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1)) >= 2 * 10_000 * 10


def test_the_unit_passes_systemd_analyze_verify(dest, tmp_path):
    analyze = need_tool("systemd-analyze")
    unit = (dest / UNIT).read_text()
    # verify needs ExecStart's binary at its path: the staged one.
    assert f"ExecStart={PREFIX}/bin/medlb " in unit
    checked = tmp_path / "medlb.service"
    checked.write_text(unit.replace(f"ExecStart={PREFIX}/bin/medlb ", f"ExecStart={dest}{PREFIX}/bin/medlb "))

    result = subprocess.run([analyze, "verify", str(checked)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "medlb.service" in line]
    assert not complaints, complaints  # unknown keys are only warned about


def test_the_installed_medlb_runs_the_installed_config(dest, tmp_path):
    """The installed environment alone (no checkout on the path), the installed config
    with its paths moved under DESTDIR and free ports, READY=1 on a NOTIFY_SOCKET."""
    python = dest / PREFIX.lstrip("/") / "bin/python"
    admin, vip, backend = free_ports(3)
    text = (dest / "etc/medlb/medlb.yaml").read_text()
    text = (text.replace("/etc/medlb/", f"{dest}/etc/medlb/").replace("/var/lib/medlb", f"{dest}/var/lib/medlb")
            .replace(f"{LOOPBACK}:9443", f"{LOOPBACK}:{admin}").replace(f"{LOOPBACK}:10400", f"{LOOPBACK}:{vip}")
            .replace(f"{LOOPBACK}:10401", f"{LOOPBACK}:{backend}"))
    config = tmp_path / "medlb.yaml"
    config.write_text(text + "workers: 1\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**installed_env(), "NOTIFY_SOCKET": str(notify.path)}
    checked = subprocess.run([python, "-m", "medlb", "check", str(config)], capture_output=True, text=True,
                             env=env, timeout=60)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen([python, "-m", "medlb", "run", "-c", str(config)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = notify.until(lambda m: m.get("READY") == "1", 60)
        assert "0 of 1 server up" in ready["STATUS"], ready  # nothing listens on the example's server
        cert = dest / "var/lib/medlb/admin-tls/cert.pem"
        token = (dest / "etc/medlb/token").read_text().strip()
        answer = httpx.get(f"https://{LOOPBACK}:{admin}/api/v1/services", verify=ssl.create_default_context(
                           cafile=str(cert)),
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200 and answer.json()[0]["name"] == "example"
        ctl = subprocess.run([python, "-m", "medlb", "ctl", "--url", f"https://{LOOPBACK}:{admin}", "--ca", str(cert),
                              "--token-file", str(dest / "etc/medlb/token"), "status"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert ctl.returncode == 0 and "example" in ctl.stdout, ctl.stdout + ctl.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        notify.close()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_the_installed_medlb_plans_with_the_rates_shipped_in_the_package(dest):
    python = dest / PREFIX.lstrip("/") / "bin/python"

    result = subprocess.run([python, "-m", "medlb", "plan", str(ROOT / "examples/plan-imaging.yaml"), "--json"],
                            capture_output=True, text=True, env=installed_env(), timeout=60)

    assert result.returncode == 0, result.stderr
    assert "figures shipped with medlb" in json.loads(result.stdout)["recommendation"]["measured"]["source"]


def test_a_second_install_keeps_the_config_and_the_token(own_dest):
    dest = own_dest
    config, token = dest / "etc/medlb/medlb.yaml", dest / "etc/medlb/token"
    config.write_text(config.read_text() + "# edited by the site\n")
    before = config.read_text(), token.read_text()

    result = make("install", dest)

    assert (config.read_text(), token.read_text()) == before
    assert "kept /etc/medlb/medlb.yaml" in result.stdout and "kept /etc/medlb/token" in result.stdout
    assert (dest / PREFIX.lstrip("/") / "bin/medlb").exists()


def test_uninstall_removes_all_but_the_config_and_the_state(own_dest):
    dest = own_dest
    (dest / "var/lib/medlb/medlb.db").write_text("")  # what a run leaves

    make("uninstall", dest)

    assert not (dest / PREFIX.lstrip("/")).exists()
    assert not (dest / "usr/local/bin/medlb").is_symlink()
    assert not (dest / UNIT).exists()
    assert (dest / "etc/medlb/medlb.yaml").exists() and (dest / "etc/medlb/token").exists()
    assert (dest / "var/lib/medlb/medlb.db").exists()
