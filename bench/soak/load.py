"""Steady, bounded client load on every service, and an exact record of what it saw.

Each client loops until the deadline (and at most `max_attempts` times), pausing
between attempts so that the load stays steady rather than flat out: the soak looks for
what breaks over time, not for the peak rate (that is `make bench`). Every attempt is
recorded with its start and end on the monotonic clock, so verdict.py can tell a
failure at the instant a server died from one after medlb knew it was down.

HL7 senders keep a ledger of every message: sent, answered AA (by a real engine),
answered AE/AR (by medlb: our engines only ever answer AA), answered for another
message, or never answered (LOST).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.soak.estate import ACK_WAIT, LOOPBACK
from medlb.hl7send import test_message
from medlb.protocols import mllp
from medlb.protocols.hl7 import HL7Error, parse_ack

#: Client-side bound of one attempt (connect, exchange, close). Generous: a slow answer
#: on a busy 2-core machine is not a failure; a hang is.
ATTEMPT_TIMEOUT = 20.0
#: dcmtk reads this: no Nagle delay on its sockets (see bench/dicom_store.py).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class Attempt:
    """One unit of work: a tcp connection, an association, an HL7 message, an HTTP request."""

    mode: str
    started: float
    ended: float
    ok: bool
    error: str = ""


@dataclass
class Ledger:
    """Every HL7 message a sender wrote, by MSH-10, and what came back for it."""

    sent: dict[str, float] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    naked: dict[str, str] = field(default_factory=dict)  # control id -> "AE: reason"
    wrong: dict[str, str] = field(default_factory=dict)  # control id -> the MSA-2 that came instead
    lost: dict[str, str] = field(default_factory=dict)   # control id -> what happened instead of an answer

    def as_dict(self) -> dict[str, Any]:
        return {"sent": len(self.sent), "acked_aa": len(self.acked), "naked": len(self.naked),
                "wrong_ack": len(self.wrong), "lost": len(self.lost),
                "lost_examples": dict(list(self.lost.items())[:10]),
                "nak_examples": dict(list(self.naked.items())[:10]),
                "wrong_examples": dict(list(self.wrong.items())[:10])}


@dataclass
class Record:
    """Everything the clients saw."""

    attempts: list[Attempt] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    #: A client that stopped on an error of the harness's own: reported, not judged.
    harness: list[str] = field(default_factory=list)

    def add(self, mode: str, started: float, error: str = "") -> None:
        self.attempts.append(Attempt(mode, started, time.monotonic(), not error, error))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__


class Load:
    """The clients of every mode, started together and stopped at one deadline."""

    def __init__(self, vips: dict[str, int], deadline: float, record: Record, workdir: Path,
                 max_attempts: int = 1_000_000, seed: int = 1):
        self.vips, self.deadline, self.record, self.workdir = vips, deadline, record, workdir
        self.max_attempts = max_attempts
        self.rng = random.Random(seed)

    def running(self, done: int) -> bool:
        return time.monotonic() < self.deadline and done < self.max_attempts

    async def run(self) -> None:
        from dicom_helpers import sample_files

        files = [str(path) for path in sample_files(2)]
        await asyncio.gather(
            *(self.guarded("tcp", self.tcp_client()) for _ in range(2)),
            *(self.guarded("http", self.http_client(index)) for index in range(2)),
            *(self.guarded("mllp", self.hl7_sender(index)) for index in range(3)),
            self.guarded("dicom", self.dicom_client(files)),
        )

    async def guarded(self, mode: str, client: Any) -> None:
        """One client's unexpected error stops that client, not the run."""
        try:
            await client
        except Exception as exc:  # reported in the table, with its type
            self.record.harness.append(f"a {mode} client stopped: {describe(exc)}")

    async def repeat(self, mode: str, pause: float, once: Callable[[int], Awaitable[str]]) -> None:
        """Call once(n) until the deadline, recording each as an attempt: its answer is
        the error ("" for success); a network error it raises is the error too."""
        done = 0
        while self.running(done):
            done += 1
            started = time.monotonic()
            try:
                error = await once(done)
            except (OSError, EOFError, TimeoutError, ValueError, httpx.HTTPError) as exc:
                error = describe(exc)
            self.record.add(mode, started, error)
            await asyncio.sleep(pause)

    # --- tcp: connect, read the server's name, three echo round trips, close ----------

    async def tcp_client(self) -> None:
        await self.repeat("tcp", 0.05, self.tcp_once)

    async def tcp_once(self, _: int) -> str:
        async with asyncio.timeout(ATTEMPT_TIMEOUT):
            reader, writer = await asyncio.open_connection(LOOPBACK, self.vips["tcp"])
            try:
                if not (await reader.readline()).endswith(b"\n"):
                    return "closed before the server said its name"
                for _ in range(3):
                    payload = os.urandom(self.rng.randint(1, 4096))
                    writer.write(payload)
                    if await reader.readexactly(len(payload)) != payload:
                        return "the echo differs from what was sent"
                return ""
            finally:
                writer.close()

    # --- http: keep-alive GETs, some uploads, some Connection: close -----------------

    async def http_client(self, index: int) -> None:
        body = os.urandom(8192)
        digest = hashlib.sha256(body).hexdigest()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{self.vips['http']}", limits=limits,
                                     timeout=ATTEMPT_TIMEOUT) as client:

            async def once(done: int) -> str:
                if done % 10 == 0:
                    response = await client.post("/upload", content=body)
                    if response.status_code != 200 or response.json().get("sha256") != digest:
                        return f"upload answered {response.status_code}: {response.text[:100]!r}"
                    return ""
                headers = {"Connection": "close"} if done % 25 == 0 else {}
                response = await client.get(f"/name?c={index}-{done}", headers=headers)
                if response.status_code != 200 or not response.text.startswith("h"):
                    return f"GET answered {response.status_code}: {response.text[:100]!r}"
                return ""

            await self.repeat("http", 0.03, once)

    # --- dicom: storescu, one association with two C-STOREs ---------------------------

    async def dicom_client(self, files: list[str]) -> None:
        async def once(_: int) -> str:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "storescu", "-aet", "SOAK", "-aec", "MEDLB", "-to", "15", "-ta", "15", "-td", "15",
                    LOOPBACK, str(self.vips["dicom"]), *files,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=DCMTK_ENV)
            except OSError as exc:  # not medlb's doing: stop this client, say why
                raise RuntimeError(f"storescu did not start: {describe(exc)}") from None
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT * 2):
                    output, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return "storescu timed out"
            if proc.returncode == 0:
                return ""
            lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
            return f"storescu exit {proc.returncode}: {' / '.join(lines[-2:])[:300]}"

        await self.repeat("dicom", 0.2, once)

    # --- mllp: one message in flight per sender, every answer checked -----------------

    async def hl7_sender(self, index: int) -> None:
        ledger = self.record.ledger
        done = 0
        while self.running(done):
            started = time.monotonic()
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(LOOPBACK, self.vips["mllp"])
            except (OSError, TimeoutError) as exc:
                done += 1
                self.record.add("mllp", started, f"connect: {describe(exc)}")
                await asyncio.sleep(0.2)
                continue
            decoder = mllp.FrameDecoder(1 << 20)
            control_id = ""
            try:
                while self.running(done):
                    done += 1
                    control_id = f"SOAK{index}-{done}"
                    started = time.monotonic()
                    ledger.sent[control_id] = started
                    patient = f"P{self.rng.randrange(40):04d}"
                    writer.write(mllp.encode(test_message(control_id, patient, "T")))
                    answer = await self._answer(reader, decoder)
                    if answer is None:
                        ledger.lost[control_id] = "the connection closed without an answer"
                        self.record.add("mllp", started, "closed without an answer")
                        break
                    if isinstance(answer, str):
                        ledger.lost[control_id] = answer
                        self.record.add("mllp", started, answer)
                        break
                    error = self._judge(control_id, answer)
                    self.record.add("mllp", started, error)
                    await asyncio.sleep(0.02)
            except OSError as exc:  # a read that failed after a message was sent
                ledger.lost.setdefault(control_id, describe(exc))
                self.record.add("mllp", started, describe(exc))
            finally:
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader, decoder: mllp.FrameDecoder) -> bytes | str | None:
        """The next frame; None if the connection closed; a reason if none came in time."""
        try:
            async with asyncio.timeout(ACK_WAIT):
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return None
                    for event in decoder.feed(data):
                        if isinstance(event, mllp.Frame):
                            return event.payload
        except TimeoutError:
            return f"no answer within {ACK_WAIT:g} s"

    def _judge(self, control_id: str, answer: bytes) -> str:
        ledger = self.record.ledger
        try:
            ack = parse_ack(answer)
        except HL7Error as exc:
            ledger.wrong[control_id] = f"unreadable answer: {exc}"
            return "unreadable answer"
        if ack.acked_control_id != control_id.encode():
            ledger.wrong[control_id] = ack.acked_control_id.decode(errors="replace")
            return "ACK for another message"
        if ack.code == b"AA":
            ledger.acked.add(control_id)
            return ""
        reason = next((s.split(b"|")[3] for s in answer.split(b"\r") if s.startswith(b"MSA|")
                       and len(s.split(b"|")) > 3), b"")
        ledger.naked[control_id] = f"{ack.code.decode()}: {reason.decode(errors='replace')}"
        return f"NAK {ack.code.decode()}"
