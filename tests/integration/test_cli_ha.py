"""`medlb check` and `medlb run` on a config with the clustered pair's `ha:` section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ha.yaml"


def medlb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlb", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_accepts_the_pair_and_says_it_does_not_run_yet(tmp_path):
    result = medlb("check", str(EXAMPLE), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert ("pair: lb-a 198.18.0.4 (priority 150), lb-b 198.18.0.5 (priority 100); VIPs 198.18.0.100/24 on lb0; "
            "VRRP id 51 every 500ms, preempt off") in result.stdout
    assert "the clustered pair (ha:) is not yet available in this release" in result.stdout


def test_run_refuses_the_pair_and_starts_nothing(tmp_path):
    config = tmp_path / "medlb.yaml"
    config.write_text(EXAMPLE.read_text().replace("/etc/medlb/", f"{tmp_path}/") + f"state_dir: {tmp_path}/state\n")
    (tmp_path / "token").write_text("a-long-enough-admin-token\n")

    result = medlb("run", "-c", str(config), cwd=tmp_path)

    assert result.returncode == 2
    assert "ha (line 6): the clustered pair (ha:) is not yet available in this release" in result.stderr
    assert not (tmp_path / "state").exists()
