"""The track script's question and the control process's answer, over a real Unix
socket: `medlb ha-alive` passes only while medlb answers that its data plane serves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from medlb.config import parse_config
from medlb.ha import alive
from medlb.ha.supervisor import PairNode

HA = parse_config((Path(__file__).resolve().parents[2] / "examples" / "ha.yaml").read_text()).config.ha


def ha_alive(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlb", "ha-alive", "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=30)


def test_the_check_passes_while_medlb_says_alive_and_fails_when_it_says_why_not_or_is_gone(tmp_path):
    problem: list[str | None] = [None]
    assert HA is not None
    node = PairNode(HA, HA.nodes[0], tmp_path, ["medlb"], lambda: problem[0], lambda old, new: None)

    async def scenario() -> list[subprocess.CompletedProcess[str]]:
        node.files.directory.mkdir(parents=True)
        await node._answer_alive()
        answers = [await asyncio.to_thread(ha_alive, tmp_path)]
        problem[0] = "no data-plane worker is running"
        answers.append(await asyncio.to_thread(ha_alive, tmp_path))
        await node.close()
        return answers

    up, no_workers = asyncio.run(scenario())
    assert (up.returncode, up.stdout.strip()) == (0, "alive")
    assert (no_workers.returncode, no_workers.stderr.strip()) == (1, "dead: no data-plane worker is running")
    gone = ha_alive(tmp_path)  # medlb gone: nothing answers
    assert gone.returncode == 1 and f"cannot ask medlb at {alive.socket_path(tmp_path)}" in gone.stderr
