"""`script`: an external command decides; exit 0 means up.

The server's address comes in the environment, so one script serves every server.
The command's output is not logged (it may hold anything); only its exit status and
the first line of stderr, shortened, become the reason.
"""

from __future__ import annotations

import asyncio
import os
import signal

from medlb.config.models import ScriptCheck
from medlb.health.base import CheckTarget, Outcome, local_error


async def check(target: CheckTarget, config: ScriptCheck) -> Outcome:
    env = dict(os.environ, MEDLB_SERVICE=target.service, MEDLB_SERVER=target.server,
               MEDLB_SERVER_HOST=target.host, MEDLB_SERVER_PORT=str(target.port))
    try:
        process = await asyncio.create_subprocess_exec(
            *config.command, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        if local_error(exc):
            raise  # no pipe or process for it: the runner counts that as medlb's error
        return Outcome(False, f"cannot run {config.command[0]!r}: {exc.strerror}")
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:
        # The runner's timeout or a stop: end the command and anything it started
        # (it runs in its own session, so its process group is its own).
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await process.wait()
        raise
    if process.returncode == 0:
        return Outcome(True, "script exited 0")
    first_line = (stderr or b"").decode(errors="replace").strip().splitlines()[:1]
    detail = f": {first_line[0][:120]}" if first_line else ""
    return Outcome(False, f"script exited {process.returncode}{detail}")
