"""`medlb check` and `medlb run` on a config with the clustered pair's `ha:` section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ha.yaml"


def medlb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlb", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_accepts_the_pair(tmp_path):
    result = medlb("check", "--no-host", str(EXAMPLE), cwd=tmp_path)  # it names /etc/medlb files

    assert result.returncode == 0, result.stderr
    assert ("pair: lb-a 198.18.0.4 (priority 150), lb-b 198.18.0.5 (priority 100); VIPs 198.18.0.100/24 on lb0; "
            "VRRP id 51 every 500ms, preempt off") in result.stdout
    assert "ha (line" not in result.stdout  # config and decisions are synced: nothing to advise


def test_run_on_a_host_that_is_neither_node_refuses_and_starts_nothing(tmp_path):
    config = tmp_path / "medlb.yaml"
    config.write_text(EXAMPLE.read_text().replace("/etc/medlb/", f"{tmp_path}/") + f"state_dir: {tmp_path}/state\n")
    (tmp_path / "token").write_text("a-long-enough-admin-token\n")
    (tmp_path / "ha-token").write_text("a-long-enough-sync-token\n")

    result = medlb("run", "-c", str(config), cwd=tmp_path)

    assert result.returncode == 1
    assert ("medlb cannot start: the clustered pair: this host has none of the node addresses of ha.nodes "
            "(lb-a (198.18.0.4), lb-b (198.18.0.5)); add this node's address to its interface, or name the node "
            "with medlb run --node NAME") in result.stderr
    assert not (tmp_path / "state").exists()


def test_run_with_a_node_name_the_file_does_not_have_refuses(tmp_path):
    config = tmp_path / "medlb.yaml"
    config.write_text(EXAMPLE.read_text().replace("/etc/medlb/", f"{tmp_path}/") + f"state_dir: {tmp_path}/state\n")
    (tmp_path / "token").write_text("a-long-enough-admin-token\n")
    (tmp_path / "ha-token").write_text("a-long-enough-sync-token\n")

    result = medlb("run", "-c", str(config), "--node", "lb-c", cwd=tmp_path)

    assert result.returncode == 1
    assert "--node lb-c: ha.nodes has no node of that name (it has lb-a (198.18.0.4), lb-b (198.18.0.5))" \
        in result.stderr
