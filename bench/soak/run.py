"""`python -m bench.soak`: start the estate, run load, chaos and the watchers until the
deadline, stop everything, judge, write bench/results/soak.{md,json}.

Exit status: 0 every must held, 1 a must was broken (the table says which), 2 the
harness could not run (a peer or medlb did not start; the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from bench.soak import verdict
from bench.soak.chaos import Chaos, Log
from bench.soak.estate import (
    ACK_WAIT,
    HEALTH_INTERVAL,
    MODES,
    ROOT,
    TOKEN,
    WORKERS,
    Estate,
    service_name,
)
from bench.soak.load import Load, Record
from bench.soak.watch import Seen, Watch, api_client

#: Beyond the run and the last HL7 answers, how long stopping may take before the
#: watchdog declares a hang.
GRACE = 120.0


class HarnessError(Exception):
    """The soak could not run at all: nothing about medlb can be concluded."""


async def wait_all_up(client: httpx.AsyncClient, timeout: float = 90.0) -> None:
    """Every server checked and up before the clock starts."""
    deadline = time.monotonic() + timeout
    waiting: list[str] = ["(no answer from the API yet)"]
    while time.monotonic() < deadline:
        try:
            services = (await client.get("/api/v1/services")).json()
            waiting = [f"{s['name']}/{v['name']}" for s in services for v in s["servers"]
                       if v["health"] != "up" or not v["last_check"]]
            if not waiting:
                return
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(0.5)
    raise HarnessError(f"servers not up after {timeout:.0f} s: {', '.join(waiting)}")


def engine_ids(estate: Estate) -> list[str]:
    ids = []
    for log in estate.engine_logs:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                try:
                    ids.append(json.loads(line)["id"])
                except (ValueError, KeyError):
                    continue  # a line cut by SIGKILL
    return ids


async def soak(seconds: float, every: float, workdir: Path, seed: int) -> dict[str, Any]:
    estate = Estate(workdir)
    record, seen, log = Record(), Seen(), Log()
    finished, medlb_exit = True, None
    try:
        try:
            medlb = await asyncio.to_thread(estate.start)
        except Exception as exc:  # a peer or medlb that does not start: say which and why
            raise HarnessError(f"could not start the estate: {type(exc).__name__}: {exc}"[:2000]) from None
        assert medlb.proc is not None
        async with api_client(medlb.base_url, TOKEN) as client:
            await wait_all_up(client)
            started = time.monotonic()
            deadline = started + seconds
            stop = asyncio.Event()
            watcher = asyncio.create_task(Watch(client, medlb.proc.pid, seen, started).run(stop, deadline + ACK_WAIT + GRACE))
            chaos = Chaos(estate, client, log, every, seed)
            work = asyncio.gather(Load(estate.vips, deadline, record, workdir, seed=seed).run(),
                                  chaos.run(deadline - min(15.0, seconds * 0.2)))
            try:
                await asyncio.wait_for(work, seconds + ACK_WAIT + GRACE)
            except TimeoutError:
                finished = False
            finally:
                ended = time.monotonic()
                stop.set()
                try:
                    await asyncio.wait_for(watcher, 30)
                except TimeoutError:
                    pass  # cancelled: the last samples are enough
    finally:
        medlb_exit = await asyncio.to_thread(estate.stop)
    return judge(estate, record, seen, log, started, ended, seconds, every, medlb_exit, finished)


def judge(estate: Estate, record: Record, seen: Seen, log: Log, started: float, ended: float, seconds: float,
          every: float, medlb_exit: int | None, finished: bool) -> dict[str, Any]:
    traffic = verdict.traffic(record.attempts, log.outages, seen.changes, HEALTH_INTERVAL, started, ended, MODES,
                              service_name)
    hl7 = verdict.hl7(record.ledger, engine_ids(estate))
    rss = verdict.rss(seen.rss, started, ended)
    return {
        "run": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "seconds": seconds, "chaos_every": every, "workers": WORKERS, "health_interval": HEALTH_INTERVAL,
                "load": " ".join(f"{v:.2f}" for v in os.getloadavg()), "elapsed_s": round(ended - started, 1)},
        "musts": verdict.musts(traffic, hl7, rss, log, seen, medlb_exit, finished),
        "traffic": traffic,
        "hl7": hl7,
        "rss": rss,
        "chaos": {"counts": log.counts(), "reloads": log.reloads, "broken": log.broken,
                  "harness": log.harness + record.harness,
                  "actions": [{**a, "at": round(a["at"] - started, 2)} for a in log.actions],
                  "outages": [{**o.as_dict(), "killed_at": round(o.killed_at - started, 2),
                               "restarted_at": None if o.restarted_at is None else round(o.restarted_at - started, 2)}
                              for o in log.outages]},
        "health_changes": [{**c.as_dict(), "at": round(c.at - started, 2)} for c in seen.changes],
        "api": {"polls": seen.polls, "failures": seen.api_failures, "slowest_s": round(seen.slowest_poll, 3)},
        "pid_changes": seen.pid_changes,
        "medlb_exit": medlb_exit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")),
                        help="how long the load and chaos run (default: $SOAK_SECONDS or 600)")
    parser.add_argument("--chaos-every", type=float, default=4.0, help="seconds between chaos actions (about)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where soak.md and soak.json go")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (medlb and peer logs)")
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        print("soak: dcmtk (storescu, storescp) is missing; scripts/system-deps.sh installs it", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="medlb-soak-"))
    print(f"soak: {args.seconds:g} s, chaos every ~{args.chaos_every:g} s; medlb and peer logs in {workdir}",
          flush=True)
    try:
        result = asyncio.run(soak(args.seconds, args.chaos_every, workdir, args.seed))
    except HarnessError as exc:
        print(f"soak: the harness could not run: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug of the harness: never taken for a broken must (exit 1)
        traceback.print_exc()
        print(f"soak: the harness failed; logs in {workdir}", file=sys.stderr)
        return 2
    result["run"]["workdir"] = str(workdir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = verdict.markdown(result)
    (out / "soak.md").write_text(text)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    broken = [m["must"] for m in result["musts"] if m["ok"] is False]
    for name in broken:
        print(f"soak: BROKEN: {name}", file=sys.stderr)
    if not args.keep and not broken:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if broken else 0
