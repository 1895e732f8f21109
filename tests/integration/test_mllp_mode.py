"""HL7 v2 over MLLP through medlb, with python-hl7 as the sender and real receivers."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections import defaultdict
from pathlib import Path

import hl7
import psutil
import pytest
from hl7.mllp import open_hl7_connection

from helpers import LOOPBACK, free_ports, server, wait_until

LIMIT = 64 * 1024 * 1024


def mllp_service(name: str, port: int, servers: list[dict], **mllp: object) -> dict:
    return {
        "name": name,
        "mode": "mllp",
        "listen": [f"{LOOPBACK}:{port}"],
        "mllp": {"ack_timeout": "5s", **mllp},
        "health": {"type": "mllp", "interval": "300ms", "timeout": "250ms", "rise": 1, "fall": 2},
        "servers": servers,
    }


def adt(control_id: str, patient: str, event: str = "A08", extra: str = "") -> hl7.Message:
    text = (f"MSH|^~\\&|ADT|HOSP|ENGINE|HOSP|20261123120000||ADT^{event}^ADT_{event}|{control_id}|P|2.5.1\r"
            f"EVN|{event}|20261123120000\rPID|1||{patient}^^^HOSP^MR||DOE^JANE||19700101|F\r{extra}")
    return hl7.parse(text)


def received(log: Path) -> list[dict]:
    """What the receivers got, without medlb's own health-check probes."""
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in records if not r["id"].startswith("MEDLBCHK")]


async def send_batch(port: int, messages: list[hl7.Message]) -> list[hl7.Message]:
    """Pipeline every message on one connection, then read the answers in order."""
    reader, writer = await open_hl7_connection(LOOPBACK, port, limit=LIMIT)
    try:
        for message in messages:
            writer.writemessage(message)
        await writer.drain()
        return [await asyncio.wait_for(reader.readmessage(), 30) for _ in messages]
    finally:
        writer.close()


def send(port: int, messages: list[hl7.Message]) -> list[hl7.Message]:
    return asyncio.run(send_batch(port, messages))


def msa(ack: hl7.Message) -> tuple[str, str]:
    return str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))


def test_thousands_of_messages_survive_a_killed_server_in_order_and_all_acked(medlb, backends, tmp_path):
    vip, *ports = free_ports(4)
    log = tmp_path / "received.jsonl"
    for name, port in zip(("E1", "E2", "E3"), ports):
        backends.start_mllp(name, port, log)
    lb = medlb([mllp_service("adt", vip, [server(n, p) for n, p in zip(("E1", "E2", "E3"), ports)])])
    patients = [f"MRN{n:04d}" for n in range(100)]
    senders, per_sender, window = 10, 300, 20
    acked: dict[str, tuple[str, str]] = {}
    sequence: dict[str, int] = {}
    progress = {"acked": 0}

    async def sender(index: int) -> None:
        rng = random.Random(index)
        reader, writer = await open_hl7_connection(LOOPBACK, vip, limit=LIMIT)
        try:
            for batch in range(per_sender // window):
                sent = []
                for n in range(window):
                    control_id = f"S{index}-{batch * window + n}"
                    # Each sender owns ten patients, so a patient's order is its sender's order.
                    patient = patients[index * 10 + rng.randrange(10)]
                    sequence[control_id] = batch * window + n
                    writer.writemessage(adt(control_id, patient))
                    sent.append(control_id)
                await writer.drain()
                for control_id in sent:
                    answer = await asyncio.wait_for(reader.readmessage(), 30)
                    acked[control_id] = msa(answer)
                    progress["acked"] += 1
        finally:
            writer.close()

    async def killer() -> None:
        while progress["acked"] < 1000:
            await asyncio.sleep(0.01)
        backends.kill("E2")

    async def run() -> None:
        await asyncio.gather(killer(), *(sender(i) for i in range(senders)))

    asyncio.run(run())

    total = senders * per_sender
    assert len(acked) == total
    assert all(code == "AA" and acked_id == control_id for control_id, (code, acked_id) in acked.items()), \
        [item for item in acked.items() if item[1] != ("AA", item[0])][:5]
    receipts = [r for r in received(log) if r["id"] in sequence]
    assert {r["id"] for r in receipts} == set(acked)  # nothing lost
    assert {r["server"] for r in receipts} == {"E1", "E2", "E3"}
    # Duplicates only where a first delivery went unacknowledged: on the killed server.
    by_id = defaultdict(list)
    for r in sorted(receipts, key=lambda r: r["t"]):
        by_id[r["id"]].append(r["server"])
    duplicated = {i: servers for i, servers in by_id.items() if len(servers) > 1}
    assert all(servers[0] == "E2" for servers in duplicated.values()), duplicated
    # Each patient's messages arrive in the order they were sent (a resend of the same
    # message may repeat, but nothing later ever overtakes it).
    by_patient = defaultdict(list)
    for r in sorted(receipts, key=lambda r: r["t"]):
        by_patient[(r["id"].split("-")[0], r["key"])].append(sequence[r["id"]])
    for patient, order in by_patient.items():
        assert order == sorted(order), (patient, order)
    view = lb.service("adt")["mllp"]
    print(f"{total} messages, {len(duplicated)} resent after E2 was killed, retries {view['retries']}")
    assert view["acks"]["AA"] == total


def test_a_5_mb_oru_passes_and_an_oversized_frame_gets_ar_on_a_connection_that_keeps_working(medlb, backends,
                                                                                               tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("lab", vip, [server("E1", port)], max_message_size="6MiB")])
    big_obx = "OBX|1|ED|PDF^Report||" + "A" * (5 * 1024 * 1024) + "\r"
    oru = adt("ORU1", "MRN1", extra=big_obx)
    too_big = adt("ORU2", "MRN1", extra=big_obx + big_obx)

    answers = send(vip, [oru, too_big, adt("AFTER", "MRN1")])

    assert msa(answers[0]) == ("AA", "ORU1")
    assert msa(answers[1]) == ("AR", "ORU2")
    assert "max_message_size" in str(answers[1].segment("ERR"))
    assert msa(answers[2]) == ("AA", "AFTER")
    assert [r["id"] for r in received(log) if r["id"] in ("ORU1", "ORU2", "AFTER")] == ["ORU1", "AFTER"]
    assert lb.service("lab")["mllp"]["oversized"] == 1


def test_every_server_halted_gives_ae_never_aa(medlb, backends, tmp_path):
    vip, p1, p2 = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", p1, log)
    backends.start_mllp("E2", p2, log)
    lb = medlb([mllp_service("adt", vip, [server("E1", p1), server("E2", p2)])])
    lb.set_state("adt", "E1", "halt")
    lb.set_state("adt", "E2", "halt")

    answers = send(vip, [adt("M1", "MRN1"), adt("M2", "MRN2")])

    assert [msa(a) for a in answers] == [("AE", "M1"), ("AE", "M2")]
    assert "no server available" in str(answers[0].segment("ERR"))
    assert not [r for r in received(log) if r["id"] in ("M1", "M2")]


def test_a_wrong_msa_2_never_reaches_the_sender(medlb, backends, tmp_path):
    vip, bad, good = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("BAD", bad, log, mode="wrong-msa")
    # The mllp check would mark BAD down (its probe gets no matching ACK either); without
    # checks the message really goes to BAD, and medlb must not take its answer.
    bad_service = mllp_service("adt", vip, [server("BAD", bad)], ack_timeout="500ms", retries=1)
    bad_service["health"] = {"type": "none"}
    lb = medlb([bad_service])

    [answer] = send(vip, [adt("M1", "MRN1")])

    assert msa(answer) == ("AE", "M1")  # medlb's own: no server acknowledged
    assert "no server acknowledged" in str(answer.segment("ERR"))
    assert lb.service("adt")["mllp"]["mismatched_acks"] >= 2

    # With a good server beside it, the message is delivered there and acknowledged.
    backends.start_mllp("GOOD", good, log)
    config = lb.config
    config["services"][0]["servers"].append(server("GOOD", good))
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200
    answers = send(vip, [adt(f"N{i}", f"MRN{i}") for i in range(6)])
    assert [msa(a) for a in answers] == [("AA", f"N{i}") for i in range(6)]


def test_a_server_that_accepts_tcp_but_never_acks_is_marked_down(medlb, backends, tmp_path):
    vip, silent, good = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("SILENT", silent, log, mode="silent")
    backends.start_mllp("GOOD", good, log)
    lb = medlb([mllp_service("adt", vip, [server("SILENT", silent), server("GOOD", good)])])

    lb.wait_health("adt", "SILENT", "down", 10)

    assert "no answer" in lb.server("adt", "SILENT")["health_reason"]
    assert lb.server("adt", "GOOD")["health"] == "up"
    answers = send(vip, [adt(f"M{i}", f"MRN{i}") for i in range(10)])
    assert all(msa(a)[0] == "AA" for a in answers)


def test_server_ae_and_ar_are_relayed_as_they_are_and_not_retried(medlb, backends, tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log, mode="ae")
    engine = mllp_service("adt", vip, [server("E1", port)])
    engine["health"]["expect"] = "any"  # an AE means the application is alive
    lb = medlb([engine])
    lb.wait_health("adt", "E1", "up", 5)

    [answer] = send(vip, [adt("M1", "MRN1")])

    assert msa(answer) == ("AE", "M1")
    assert "MEDLB" not in str(answer.segment("MSH")(10))  # the server's own ACK
    assert [r["id"] for r in received(log)].count("M1") == 1
    assert lb.service("adt")["mllp"]["retries"] == 0


def test_bytes_outside_frames_and_unreadable_messages_are_counted_and_answered(medlb, backends, tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("adt", vip, [server("E1", port)])])

    async def raw() -> list[bytes]:
        reader, writer = await asyncio.open_connection(LOOPBACK, vip)
        writer.write(b"\r\n junk \x0bNOT HL7 AT ALL\x1c\r" + b"\x0b" + str(adt("OK1", "MRN1")).encode() + b"\x1c\r")
        await writer.drain()
        frames = []
        buffer = b""
        while len(frames) < 2:
            buffer += await asyncio.wait_for(reader.read(65536), 10)
            while b"\x1c\r" in buffer:
                frame, buffer = buffer.split(b"\x1c\r", 1)
                frames.append(frame.lstrip(b"\x0b"))
        writer.close()
        return frames

    first, second = asyncio.run(raw())

    assert str(hl7.parse(first.decode()).segment("MSA")(1)) == "AR"
    assert msa(hl7.parse(second.decode())) == ("AA", "OK1")
    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_mllp_junk_bytes_total{service="adt"} 8.0' in metrics
    assert 'medlb_mllp_unreadable_messages_total{service="adt"} 1.0' in metrics


def test_balance_connection_keeps_a_feed_on_one_server(medlb, backends, tmp_path):
    vip, p1, p2 = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", p1, log)
    backends.start_mllp("E2", p2, log)
    medlb([mllp_service("adt", vip, [server("E1", p1), server("E2", p2)], balance="connection")])

    answers = send(vip, [adt(f"M{i}", f"MRN{i}") for i in range(20)])

    assert all(msa(a)[0] == "AA" for a in answers)
    servers = {r["server"] for r in received(log) if r["id"].startswith("M")}
    assert len(servers) == 1


def test_metrics_and_logs_carry_no_patient_data(medlb, backends, tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("adt", vip, [server("E1", port)], ordering_key="PID-3.1")])
    secret_patient = "MRN77331"
    lb.set_state("adt", "E1", "halt")
    send(vip, [adt("CTRL-SECRET", secret_patient)])
    lb.set_state("adt", "E1", "online")
    send(vip, [adt("CTRL-2", secret_patient)])

    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_mllp_messages_total{server="E1",service="adt",type="ADT^A08"} 1.0' in metrics
    for text in (metrics, lb.log()):
        assert secret_patient not in text and "DOE" not in text and "CTRL-SECRET" not in text


@pytest.mark.parametrize("path", ["PID-3", "PID-3.1"])
def test_one_patient_stays_on_one_server(medlb, backends, tmp_path, path):
    vip, *ports = free_ports(4)
    log = tmp_path / "received.jsonl"
    for name, port in zip(("E1", "E2", "E3"), ports):
        backends.start_mllp(name, port, log)
    medlb([mllp_service("adt", vip, [server(n, p) for n, p in zip(("E1", "E2", "E3"), ports)],
                        ordering_key=path)])

    send(vip, [adt(f"M{i}", f"MRN{i % 30}") for i in range(300)])

    by_patient = defaultdict(set)
    for r in received(log):
        if r["id"].startswith("M"):
            by_patient[r["key"]].add(r["server"])
    assert all(len(servers) == 1 for servers in by_patient.values())
    assert len({next(iter(s)) for s in by_patient.values()}) == 3


def test_keys_move_to_the_backup_and_back_with_manual_failback(medlb, backends, tmp_path):
    vip, primary, backup = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("PRIMARY", primary, log)
    backends.start_mllp("DR", backup, log)
    engine = mllp_service("adt", vip, [server("PRIMARY", primary)])
    engine["backup"] = [server("DR", backup)]
    engine["failback"] = "manual"
    lb = medlb([engine])

    send(vip, [adt("A1", "MRN1")])
    lb.set_state("adt", "PRIMARY", "halt")
    send(vip, [adt("A2", "MRN1")])
    lb.set_state("adt", "PRIMARY", "online")
    send(vip, [adt("A3", "MRN1")])  # failback is manual: still on the backup
    assert lb.api("POST", "/api/v1/services/adt/failback").status_code == 200
    send(vip, [adt("A4", "MRN1")])

    where = {r["id"]: r["server"] for r in received(log)}
    assert [where[i] for i in ("A1", "A2", "A3", "A4")] == ["PRIMARY", "DR", "DR", "PRIMARY"]


def test_a_sender_pipelining_past_max_queued_bytes_is_slowed_not_stalled(medlb, backends, tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("lab", vip, [server("E1", port)], max_queued_bytes="1MiB", max_queued=4)])
    obx = "OBX|1|ED|PDF^Report||" + "B" * 600_000 + "\r"

    answers = send(vip, [adt(f"R{i}", f"MRN{i % 3}", extra=obx) for i in range(12)])

    assert [msa(a) for a in answers] == [("AA", f"R{i}") for i in range(12)]
    assert lb.service("lab")["mllp"]["queued"] == 0


# --- framing errors and the budget for partial frames --------------------------------------


def raw_frame(message: hl7.Message) -> bytes:
    return str(message).encode()


def test_a_start_byte_inside_a_frame_gets_ar_and_the_message_after_it_reaches_an_engine_alone(medlb, backends,
                                                                                            tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("adt", vip, [server("E1", port)])])
    # A sender that restarted mid-message: the first message's MSH and part of its PID,
    # then a new start byte and a whole message of another patient.
    cut = raw_frame(adt("CUT1", "MRN1"))
    cut = cut[:cut.index(b"PID|") + 8]

    async def exchange() -> list[hl7.Message]:
        reader, writer = await open_hl7_connection(LOOPBACK, vip, limit=LIMIT)
        try:
            writer.write(b"\x0b" + cut + b"\x0b" + raw_frame(adt("NEXT1", "MRN2")) + b"\x1c\r")
            answers = [await asyncio.wait_for(reader.readmessage(), 10) for _ in range(2)]
            writer.writemessage(adt("AFTER1", "MRN3"))  # and the connection keeps working
            answers.append(await asyncio.wait_for(reader.readmessage(), 10))
            return answers
        finally:
            writer.close()

    answers = asyncio.run(exchange())

    assert [msa(a) for a in answers] == [("AR", "CUT1"), ("AA", "NEXT1"), ("AA", "AFTER1")]
    assert "start byte" in str(answers[0].segment("ERR"))
    receipts = received(log)
    assert [r["id"] for r in receipts] == ["NEXT1", "AFTER1"]
    assert [r["start_bytes"] for r in receipts] == [0, 0]  # no engine ever sees a 0x0B
    view = lb.service("adt")["mllp"]
    assert view["negative_acks_sent"] == {"frame interrupted by a start byte": 1}
    assert view["negative_acks_by_code"] == {"AR": {"frame interrupted by a start byte": 1}}
    assert [{k: v for k, v in f.items() if k != "at"} for f in view["last_failures"]] == [
        {"code": "AR", "reason": "frame interrupted by a start byte", "server": ""}]


def test_partial_frames_up_to_the_budget_are_held_a_frame_past_it_gets_ar_and_flows_once_they_end(medlb, backends,
                                                                                                 tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    # Ordered by PID-3, the service is served by one process (workers or not): one budget.
    lb = medlb([mllp_service("lab", vip, [server("E1", port)], max_message_size="48KiB",
                             partial_frames_budget="64KiB")])
    filler = "OBX|1|ED|PDF^Report||"
    partials = [raw_frame(adt(f"PART{i}", f"MRN{i}", extra=filler)) for i in range(3)]
    partials = [p + b"P" * (20 * 1024 - len(p)) for p in partials]  # 3 x 20 KiB held: 4 KiB left
    probe = adt("PROBE1", "MRN100", extra=filler + "Q" * 8 * 1024 + "\r")

    def held() -> int:
        return lb.service("lab")["mllp"]["partial_frame_bytes"]

    async def scenario() -> tuple[list[hl7.Message], list[hl7.Message], hl7.Message]:
        connections = [await open_hl7_connection(LOOPBACK, vip, limit=LIMIT) for _ in partials]
        try:
            for (_, writer), partial in zip(connections, partials):
                writer.write(b"\x0b" + partial)
                await writer.drain()
            await asyncio.to_thread(wait_until, lambda: held() == 60 * 1024, 15, what="60 KiB of partial frames held")
            refused = await asyncio.to_thread(send, vip, [probe])
            for _, writer in connections:
                writer.write(b"\r\x1c\r")
                await writer.drain()
            ended = [await asyncio.wait_for(reader.readmessage(), 10) for reader, _ in connections]
            await asyncio.to_thread(wait_until, lambda: held() == 0, 15, what="the partial frames to be released")
            reader, writer = connections[0]
            writer.writemessage(adt("REUSED1", "MRN200"))
            reused = await asyncio.wait_for(reader.readmessage(), 10)
            return refused, ended, reused
        finally:
            for _, writer in connections:
                writer.close()

    (refused,), ended, reused = asyncio.run(scenario())

    assert msa(refused) == ("AR", "PROBE1")
    assert "partial_frames_budget" in str(refused.segment("ERR"))
    assert [msa(answer) for answer in ended] == [("AA", f"PART{i}") for i in range(3)]
    assert msa(reused) == ("AA", "REUSED1")
    assert msa(send(vip, [probe])[0]) == ("AA", "PROBE1")  # the same message passes once there is room
    delivered = [r["id"] for r in received(log)]
    assert sorted(delivered[:3]) == ["PART0", "PART1", "PART2"] and delivered[3:] == ["REUSED1", "PROBE1"]
    assert lb.service("lab")["mllp"]["negative_acks_sent"] == {"partial_frames_budget exhausted": 1}


def process_tree_rss(pid: int) -> int:
    """Resident memory of medlb and its workers together."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def unread_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the connections accepted on `port` (what
    medlb has not read yet), from /proc/net/tcp."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            total += int(fields[4].split(":")[1], 16)
    return total


def test_many_senders_stalled_mid_message_cannot_grow_medlb_past_the_budget(medlb, backends, tmp_path):
    vip, port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", port, log)
    lb = medlb([mllp_service("lab", vip, [server("E1", port)], max_message_size="3MiB",
                             partial_frames_budget="4MiB")])
    assert msa(send(vip, [adt("WARM1", "MRN1")])[0]) == ("AA", "WARM1")
    assert lb.proc is not None
    before = process_tree_rss(lb.proc.pid)
    partial = b"\x0b" + raw_frame(adt("STALL", "MRN2", extra="OBX|1|ED|PDF^Report||")) + b"S" * (5 * 1024 * 1024 // 2)
    senders = []
    try:
        for _ in range(40):  # 100 MiB of unfinished messages, were they all held
            sock = socket.create_connection((LOOPBACK, vip), timeout=10)
            senders.append(sock)
            sock.sendall(partial)
        wait_until(lambda: unread_bytes(vip) == 0, 30, what="medlb to read every byte sent")
        grown = process_tree_rss(lb.proc.pid) - before
    finally:
        for sock in senders:
            sock.close()

    print(f"40 senders x 2.5 MiB unfinished: medlb's processes grew by {grown / 2**20:.1f} MiB")
    assert grown < 40 * 2**20
    wait_until(lambda: lb.service("lab")["mllp"]["partial_frame_bytes"] == 0, 15, what="the partials released")
    assert msa(send(vip, [adt("AFTER1", "MRN3")])[0]) == ("AA", "AFTER1")


def test_answers_held_behind_a_late_ack_go_out_after_it_in_the_senders_order(medlb, backends, tmp_path):
    """A sender pipelines messages for many patients. Those owned by a server that never
    answers wait for ack_timeout and go to the other server; the ACKs of the rest come
    at once and are held until the late one is in. Then every held answer goes out, each
    the ACK of its own message, in the order the sender sent them (that they leave in one
    write is not asserted: TCP may cut or join writes on the way)."""
    vip, silent, good = free_ports(3)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("SILENT", silent, log, mode="silent")
    backends.start_mllp("GOOD", good, log)
    service = mllp_service("adt", vip, [server("SILENT", silent), server("GOOD", good)], ack_timeout="500ms",
                           retries=1)
    service["health"] = {"type": "none"}
    medlb([service])
    ids = [f"H{i}" for i in range(12)]

    answers = send(vip, [adt(control_id, f"MRN{i}") for i, control_id in enumerate(ids)])

    assert [msa(a) for a in answers] == [("AA", control_id) for control_id in ids]
    first_tries = {}
    for record in received(log):
        first_tries.setdefault(record["id"], record["server"])
    # The held path really ran: a message before the last waited for the silent server.
    assert "SILENT" in [first_tries[control_id] for control_id in ids[:-1]]
    assert "GOOD" in first_tries.values()


def test_pipelined_links_carry_several_senders_messages_each_ack_to_its_sender_in_order(medlb, backends, tmp_path):
    """pipeline: 4 over one connection to the engine: three senders pipeline at once,
    so messages of several senders are in flight on that connection together (written
    together when ready together); each sender gets its own messages' ACKs, in order."""
    vip, engine_port = free_ports(2)
    log = tmp_path / "received.jsonl"
    backends.start_mllp("E1", engine_port, log)
    service = mllp_service("adt", vip, [server("E1", engine_port)], server_connections=1, pipeline=4)
    service["health"] = {"type": "none"}
    lb = medlb([service])

    async def senders() -> list[list[hl7.Message]]:
        return await asyncio.gather(*(send_batch(vip, [adt(f"S{s}-{i}", f"MRN{s}-{i % 3}") for i in range(20)])
                                      for s in range(3)))

    answers = asyncio.run(senders())

    for s, sender_answers in enumerate(answers):
        assert [msa(a) for a in sender_answers] == [("AA", f"S{s}-{i}") for i in range(20)]
    assert len(received(log)) == 60
    assert lb.service("adt")["mllp"]["mismatched_acks"] == 0
