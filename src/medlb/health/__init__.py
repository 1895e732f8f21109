"""Health checks: one module per protocol, run concurrently by `HealthManager`.

Each server of every pool gets its own task that checks it every `interval`, bounded
by `timeout`, and feeds a CheckResult event to the runtime; the runtime applies
rise/fall and decides whether health flips. Adding a check type is one module with an
`async def check(target, config) -> Outcome` and one line in CHECKERS.

A check medlb could not make for a reason of its own host (out of descriptors: see
`base.local_error`) is medlb's error, not the server's failure: it is counted in
`errors` and logged, and the server's health stays as it was.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any, Callable

from medlb.health import dicom_echo, dicom_find, dicomweb, fhir, http, mllp, script, tcp, xds
from medlb.health.base import Checker, CheckTarget, Outcome, describe_os_error, forget_contexts, local_error
from medlb.logs import Throttle, get_logger
from medlb.runtime import CheckResult, Runtime, Server

CHECKERS: dict[str, Checker] = {
    "tcp": tcp.check,
    "http": http.check,
    "https": http.check,
    "script": script.check,
    "mllp": mllp.check,
    "dicom-echo": dicom_echo.check,
    "dicom-find": dicom_find.check,
    "fhir": fhir.check,
    "dicomweb": dicomweb.check,
    "xds": xds.check,
}

log = get_logger("medlb.health")

#: A server whose checks keep failing locally gets one log line per this many seconds.
LOCAL_ERROR_LOG_EVERY = 30.0


async def run_check(checker: Checker, target: CheckTarget, config: Any) -> tuple[Outcome, float]:
    """One check with its timeout; every failure becomes an Outcome with a reason."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        outcome = await asyncio.wait_for(checker(target, config), config.timeout)
    except asyncio.TimeoutError:
        outcome = Outcome(False, f"no answer within {config.timeout:g}s")
    except OSError as exc:
        outcome = Outcome(False, describe_os_error(exc), local_error=local_error(exc))
    except Exception as exc:  # a checker bug must not stop checking
        log.error("health_check_error", exc_info=True, service=target.service, server=target.server)
        outcome = Outcome(False, f"check failed: {exc.__class__.__name__}")
    return outcome, loop.time() - started


class HealthManager:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._tasks: dict[tuple[str, str], tuple[Any, asyncio.Task[None]]] = {}
        self._retired: set[asyncio.Task[Any]] = set()
        #: Relative CA and certificate paths are taken from here (the config file's folder).
        self.base_dir: Any = None
        #: Checks medlb could not make, by (service, server, errno name).
        self.errors: Counter[tuple[str, str, str]] = Counter()
        self._error_lines: dict[tuple[str, str], Throttle] = {}
        #: Asked after a check that passed: why the server cannot take work anyway (a
        #: layer 4 DR server whose MAC is unknown), or None. Set by the kernel data plane.
        self.verify: Callable[[str, str], str | None] | None = None

    def _target(self, server: Server, config: Any) -> CheckTarget:
        service = self.runtime.services[server.service]
        port = config.port or server.port or service.config.addresses[0].port
        local_ae = service.dicom_config.ae_title if service.mode == "dicom" else None
        return CheckTarget(server.service, server.name, server.host, port, server.ae_title, local_ae,
                           service.config.backend_tls, self.base_dir)

    def sync(self) -> None:
        """Start, restart or stop check tasks to match the runtime after a (re)load."""
        forget_contexts()
        wanted: dict[tuple[str, str], tuple[Any, CheckTarget]] = {}
        for service in self.runtime.services.values():
            config = service.config.health
            if config.type == "none" or config.type not in CHECKERS:
                continue
            for server in service.servers():
                wanted[(service.name, server.name)] = (config, self._target(server, config))
        for key in list(self._tasks):
            signature, task = self._tasks[key]
            if key not in wanted or wanted[key] != signature:
                self._retire(task)
                del self._tasks[key]
        for key, (config, target) in wanted.items():
            if key not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._loop(config, target), name=f"check {key}")
                self._tasks[key] = ((config, target), task)

    def _retire(self, task: asyncio.Task[None]) -> None:
        """End a check loop. The cancel alone is not enough: Python 3.11's wait_for
        drops a cancel that arrives as the check answers (CPython gh-86296), so the
        loop also stops at its next turn once it is no longer among the running ones."""
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        task.cancel()

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            self._retire(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, config: Any, target: CheckTarget) -> None:
        checker = CHECKERS[config.type]
        # Spread the first checks so a hundred servers are not all probed in one burst.
        await asyncio.sleep(random.uniform(0, min(config.interval, 1.0) / 4))
        while True:
            outcome, latency = await run_check(checker, target, config)
            if asyncio.current_task() in self._retired:
                return
            if outcome.ok and self.verify is not None:
                reason = self.verify(target.service, target.host)
                if reason is not None:
                    outcome = Outcome(False, reason)
            if outcome.local_error is not None:
                self._local_error(target, outcome.local_error, outcome.reason)
            else:
                self.runtime.apply(CheckResult(target.service, target.server, outcome.ok, outcome.reason,
                                               latency, at=time.time(), echo_seconds=outcome.echo_seconds))
            await asyncio.sleep(max(0.0, config.interval - latency))

    def _local_error(self, target: CheckTarget, reason: str, detail: str) -> None:
        """Counted and logged as medlb's error; the server's health is left alone."""
        self.errors[(target.service, target.server, reason)] += 1
        key = (target.service, target.server)
        count = self._error_lines.setdefault(key, Throttle(LOCAL_ERROR_LOG_EVERY)).hit()
        if count:
            log.error("health_check_local_error", service=target.service, server=target.server, reason=reason,
                      detail=detail, errors=count, health="unchanged")
