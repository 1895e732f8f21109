"""`medlb hl7-send HOST:PORT`: send test ADT messages over MLLP and print each ACK.

For an operator checking a VIP or an engine by hand, and for the demo's one-line
command. It prints only the ACK's MSA segment (code, control ID, text), which carries
no patient data; the test message uses MSH-11 = T unless --production is given.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import time

from medlb.config.units import parse_server_address
from medlb.protocols import mllp
from medlb.protocols.hl7 import HL7Error, parse_ack


def test_message(control_id: str, patient: str, processing_id: str) -> bytes:
    now = time.strftime("%Y%m%d%H%M%S")
    return (f"MSH|^~\\&|MEDLB|TEST|ENGINE|TEST|{now}||ADT^A08^ADT_A01|{control_id}|{processing_id}|2.5.1\r"
            f"EVN|A08|{now}\rPID|1||{patient}^^^TEST^MR||TEST^PATIENT\r").encode()


def control_id_for(run_id: str, n: int) -> str:
    """MSH-10 of the run's n-th message: a random run id, so that runs never repeat one
    (an engine that drops duplicates would drop a repeat as already seen), within the
    20 characters HL7 2.5 allows up to a million messages a run."""
    return f"MEDLB{run_id}{n + 1:04d}"


def run(args: argparse.Namespace) -> int:
    address = parse_server_address(args.address)
    port = address.port or 2575
    decoder = mllp.FrameDecoder(16 * 1024 * 1024)
    failures = 0
    run_id = secrets.token_hex(4).upper()
    with socket.create_connection((address.host, port), timeout=args.timeout) as sock:
        for n in range(args.count):
            control_id = control_id_for(run_id, n)
            sock.sendall(mllp.encode(test_message(control_id, args.patient, "P" if args.production else "T")))
            answer = None
            while answer is None:
                data = sock.recv(65536)
                if not data:
                    print(f"{control_id}: the connection closed without an ACK")
                    return 1
                for event in decoder.feed(data):
                    if isinstance(event, mllp.Frame):
                        answer = event.payload
            try:
                ack = parse_ack(answer)
            except HL7Error as exc:
                print(f"{control_id}: unreadable answer ({exc})")
                return 1
            msa = next((s for s in answer.split(b"\r") if s.startswith(b"MSA")), b"")
            print(f"{control_id}: {msa.decode(errors='replace')}")
            failures += ack.code != b"AA" or ack.acked_control_id != control_id.encode()
    return 1 if failures else 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("hl7-send", help="send test HL7 ADT messages over MLLP and print the ACKs")
    parser.add_argument("address", help="host:port of an mllp service or an engine")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--patient", default="TEST0001", help="PID-3 of the test patient")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--production", action="store_true", help="MSH-11 = P instead of T")
    parser.set_defaults(func=run)
