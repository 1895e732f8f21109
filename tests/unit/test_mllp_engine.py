"""The HL7 delivery rules (runtime/mllp.py), driven by events with no socket and no loop.

A harness plays the I/O layer: it records the engine's actions, keeps which links are
connected, and lets a test say what the servers do (connect, fail, answer, time out).
What a sender hears is the `Reply` actions; what a server receives is the `Write`s.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from medlb.protocols import mllp
from medlb.protocols.hl7 import parse_ack, parse_header
from medlb.runtime import mllp as engine
from medlb.runtime.mllp import NAK_NO_SERVER, NAK_NOT_ACKED, Engine
from runtime_helpers import make_runtime, set_state, svc


def message(control_id: str, patient: str) -> bytes:
    return (f"MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101000000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r"
            f"PID|1||{patient}^^^HOSP^MR||DOE^JOHN\r").encode()


def ack(control_id: str, code: str = "AA") -> bytes:
    return f"MSH|^~\\&|EHR|HOSP|ADT|HOSP|20240101000001||ACK^A01^ACK|S{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r".encode()


class Harness:
    """The engine of one mllp service and a record of everything it asked for."""

    def __init__(self, servers=("e1", "e2"), **mllp_options):
        self.runtime = make_runtime({name: 1 for name in servers}, mode="mllp", mllp=mllp_options)
        self.now = 1000.0
        self.engine = Engine(lambda: svc(self.runtime), clock=lambda: self.now)
        self.connecting: list[engine.Link] = []
        self.timers: set[engine.Link] = set()
        self.written: list[tuple[engine.Link, bytes]] = []
        self.replies: list[tuple[engine.Delivery, bytes]] = []
        self.from_servers: list[bytes] = []  # every frame a server sent, framed as relayed

    def run(self, actions: list[engine.Action]) -> None:
        for action in actions:
            if isinstance(action, engine.Connect):
                self.connecting.append(action.link)
            elif isinstance(action, engine.Write):
                assert action.link.connected and not action.link.closed
                self.written.append((action.link, action.frame))
            elif isinstance(action, engine.Reply):
                self.replies.append((action.delivery, action.frame))
            elif isinstance(action, engine.ArmAckTimer):
                self.timers.add(action.link)
            elif isinstance(action, engine.CancelAckTimer):
                self.timers.discard(action.link)
            elif isinstance(action, engine.CloseLink):
                self.timers.discard(action.link)
                if action.link in self.connecting:
                    self.connecting.remove(action.link)
                elif action.link.connected:
                    self.run(self.engine.link_lost(action.link))  # the transport's connection_lost

    def send(self, control_id: str, patient: str, client: object = "sender") -> engine.Delivery:
        payload = message(control_id, patient)
        delivery = self.engine.delivery(payload, parse_header(payload), b"key:" + patient.encode(), client)
        self.run(self.engine.submit(delivery))
        return delivery

    def connect_all(self) -> None:
        while self.connecting:
            self.run(self.engine.link_connected(self.connecting.pop(0)))

    def in_flight(self) -> dict[engine.Link, engine.Delivery]:
        return {link: link.delivery for links in self.engine.links.values() for link in links
                if link.delivery is not None and link.connected}

    def answer(self, link: engine.Link, payload: bytes) -> None:
        self.from_servers.append(mllp.encode(payload))
        self.run(self.engine.answer(link, payload))

    def ack_in_flight(self, link: engine.Link, code: str = "AA") -> None:
        self.answer(link, ack(link.delivery.header.control_id.decode(), code))

    def reply_codes(self) -> list[tuple[str, str]]:
        answers = [parse_ack(mllp.FrameDecoder(1 << 20).feed(frame)[0].payload) for _, frame in self.replies]
        return [(a.code.decode(), a.acked_control_id.decode()) for a in answers]


def written_ids(h: Harness) -> list[str]:
    return [parse_header(mllp.FrameDecoder(1 << 20).feed(frame)[0].payload).control_id.decode()
            for _, frame in h.written]


def test_one_patients_messages_are_never_in_flight_together_and_go_in_order():
    h = Harness()
    h.send("M1", "P1")
    h.send("M2", "P1")
    h.send("M3", "P1")
    h.connect_all()
    assert written_ids(h) == ["M1"], "the second message of a patient left before the first was acked"
    link = h.written[0][0]
    h.ack_in_flight(link)
    assert written_ids(h) == ["M1", "M2"]
    h.ack_in_flight(h.written[-1][0])
    h.ack_in_flight(h.written[-1][0])
    assert written_ids(h) == ["M1", "M2", "M3"]
    assert h.reply_codes() == [("AA", "M1"), ("AA", "M2"), ("AA", "M3")]


def test_different_patients_are_in_flight_at_once():
    h = Harness(servers=("e1",), server_connections=4)
    for n in range(3):
        h.send(f"M{n}", f"P{n}")
    h.connect_all()
    assert sorted(written_ids(h)) == ["M0", "M1", "M2"]
    assert len(h.in_flight()) == 3


def test_a_message_is_resent_to_another_server_when_its_server_dies_before_the_ack():
    h = Harness(retries=2)
    h.send("M1", "P1")
    h.connect_all()
    first = h.written[0][0]
    h.run(h.engine.link_lost(first))  # the server closed the connection, no ACK
    h.connect_all()
    second = h.written[-1][0]
    assert written_ids(h) == ["M1", "M1"]
    assert second.server is not first.server, "resent to the server that just failed"
    h.ack_in_flight(second)
    assert h.reply_codes() == [("AA", "M1")]
    assert svc(h.runtime).mllp_stats.retries == 1


def test_no_ack_in_time_gets_medlbs_own_ae_with_its_text():
    h = Harness(servers=("e1",), retries=0, ack_timeout=5)
    h.send("M1", "P1")
    h.connect_all()
    (link,) = h.timers
    h.run(h.engine.ack_timeout(link))
    ((_, frame),) = h.replies
    reply = mllp.FrameDecoder(1 << 20).feed(frame)[0].payload
    assert h.reply_codes() == [("AE", "M1")]
    assert f"{NAK_NOT_ACKED} after 1 attempt(s)".encode() in reply
    assert reply not in [f[1:-2] for f in h.from_servers]


def test_no_available_server_gets_medlbs_ae_and_the_next_message_of_the_key_goes_on():
    h = Harness(servers=("e1",))
    set_state(h.runtime, "e1", "drain")
    h.send("M1", "P1")
    assert h.reply_codes() == [("AE", "M1")]
    assert NAK_NO_SERVER.encode() in h.replies[0][1]
    assert not h.engine.keys


def test_an_ack_for_another_message_is_not_relayed():
    h = Harness()
    h.send("M1", "P1")
    h.connect_all()
    h.answer(h.written[0][0], ack("M0"))  # MSA-2 is not M1's MSH-10
    assert h.replies == []
    assert svc(h.runtime).mllp_stats.mismatched_acks == 1


def test_a_message_waiting_for_a_drained_server_goes_to_another_at_once():
    h = Harness(server_connections=1)
    service = svc(h.runtime)
    owner = service.pick_for_key(b"key:P0")
    second = next(f"P{n}" for n in range(1, 100) if service.pick_for_key(f"key:P{n}".encode()) is owner)
    h.send("M1", "P0")
    h.send("M2", second)  # waits for the owner's one link
    h.connect_all()
    assert written_ids(h) == ["M1"]
    h.run(h.engine.changes(set_state(h.runtime, owner.name, "drain")))
    h.connect_all()
    assert written_ids(h) == ["M1", "M2"]
    assert h.written[1][0].server is not owner
    h.ack_in_flight(h.written[1][0])
    h.ack_in_flight(h.written[0][0])  # the message already on the drained server finishes there
    assert h.reply_codes() == [("AA", "M2"), ("AA", "M1")]


# --- properties over random event sequences --------------------------------------------

PATIENTS = ("P1", "P2", "P3")
steps = st.lists(st.one_of(
    st.tuples(st.just("send"), st.sampled_from(PATIENTS)),
    st.tuples(st.just("connect"), st.integers(0, 7)),
    st.tuples(st.just("refuse"), st.integers(0, 7)),       # a connection attempt fails
    st.tuples(st.just("ack"), st.integers(0, 7), st.sampled_from(["AA", "AE", "AR"])),
    st.tuples(st.just("wrong_ack"), st.integers(0, 7)),    # an MSA-2 for another message
    st.tuples(st.just("drop"), st.integers(0, 7)),         # the server closes the link
    st.tuples(st.just("timeout"), st.integers(0, 7)),
    st.tuples(st.just("state"), st.sampled_from(["e1", "e2"]), st.sampled_from(["online", "drain", "halt"])),
    st.tuples(st.just("reap"), st.integers(0, 400)),
    st.tuples(st.just("leave"), st.integers(0, 20)),       # a sender leaves with a message unanswered
), max_size=60)


def pick(items: list, index: int):
    return items[index % len(items)] if items else None


@settings(max_examples=150, deadline=None)
@given(steps)
def test_any_event_sequence_keeps_the_delivery_rules(sequence):
    keeps_the_delivery_rules(sequence, Harness(retries=1, server_connections=2, ack_timeout=5))


@settings(max_examples=150, deadline=None)
@given(steps)
def test_any_event_sequence_keeps_the_delivery_rules_with_pipelined_links(sequence):
    keeps_the_delivery_rules(sequence, Harness(retries=1, server_connections=2, ack_timeout=5, pipeline=3))


def keeps_the_delivery_rules(sequence, h: Harness) -> None:
    deliveries: list[engine.Delivery] = []
    for n, step in enumerate(sequence):
        kind = step[0]
        if kind == "send":
            deliveries.append(h.send(f"M{n}", step[1], client=f"client{n}"))
        elif kind == "connect" and h.connecting:
            h.run(h.engine.link_connected(h.connecting.pop(step[1] % len(h.connecting))))
        elif kind == "refuse" and h.connecting:
            h.run(h.engine.link_lost(h.connecting.pop(step[1] % len(h.connecting)), "connect failed"))
        elif kind == "ack" and (link := pick(list(h.in_flight()), step[1])) is not None:
            # Any message on the link, not only the oldest: an engine may answer out of order.
            delivery = pick(list(link.in_flight), step[1] // 2)
            h.answer(link, ack(delivery.header.control_id.decode(), step[2]))
        elif kind == "wrong_ack" and (link := pick(list(h.in_flight()), step[1])) is not None:
            h.answer(link, ack("NOT-" + link.delivery.header.control_id.decode()))
        elif kind == "drop" and (link := pick(list(h.in_flight()), step[1])) is not None:
            h.run(h.engine.link_lost(link))
        elif kind == "timeout" and (link := pick(sorted(h.timers, key=id), step[1])) is not None:
            h.run(h.engine.ack_timeout(link))
        elif kind == "state":
            h.run(h.engine.changes(set_state(h.runtime, step[1], step[2])))
        elif kind == "reap":
            h.now += step[1]
            h.run(h.engine.reap())
        elif kind == "leave" and (delivery := pick(deliveries, step[1])) is not None:
            h.run(h.engine.cancel(delivery))

        # One message per ordering key on the links (connected or not), ever.
        keys = Counter(d.key for links in h.engine.links.values() for link in links for d in link.in_flight)
        assert all(count == 1 for count in keys.values()), keys
        assert all(len(link.in_flight) <= svc(h.runtime).config.mllp.pipeline
                   for links in h.engine.links.values() for link in links)
        # The head of each key's queue is the oldest message of that key not yet answered.
        for key, queue in h.engine.keys.items():
            assert all(d.key == key and not d.done for d in queue)

    relayed = set(h.from_servers)
    answered = Counter(id(d) for d, _ in h.replies)
    assert all(count == 1 for count in answered.values()), "a message was answered twice"
    for delivery, frame in h.replies:
        payload = mllp.FrameDecoder(1 << 20).feed(frame)[0].payload
        answer = parse_ack(payload)
        assert answer.acked_control_id == delivery.header.control_id, "an answer went to the wrong message"
        if frame not in relayed:
            # medlb's own answer: always AE, never AA, with one of medlb's texts.
            assert answer.code == b"AE", payload
            assert any(text.encode() in payload for text in (NAK_NO_SERVER, NAK_NOT_ACKED, engine.NAK_STOPPING))
    # Every message is answered once or still owed: none is lost in the engine.
    owed = {id(d) for queue in h.engine.keys.values() for d in queue}
    for delivery in deliveries:
        assert (id(delivery) in answered) or delivery.client is None or id(delivery) in owed


def test_pipelined_messages_share_one_link_and_each_ack_reaches_its_own_sender():
    """pipeline: 2, one connection: two patients' messages are written before either
    ACK; the engine answers the second first and each sender still gets its own ACK."""
    h = Harness(servers=("e1",), server_connections=1, pipeline=2)
    first = h.send("M1", "P1", client="sender1")
    second = h.send("M2", "P2", client="sender2")
    h.connect_all()
    (link,) = h.engine.links[svc(h.runtime).server("e1")]
    assert [lnk for lnk, _ in h.written] == [link, link]
    assert written_ids(h) == ["M1", "M2"]

    h.answer(link, ack("M2"))
    h.answer(link, ack("M1"))

    assert [(d.client, code) for (d, _), code in zip(h.replies, h.reply_codes())] == [
        ("sender2", ("AA", "M2")), ("sender1", ("AA", "M1"))]
    assert first.done and second.done and not link.in_flight


def test_a_pipelined_link_lost_sends_every_message_on_it_to_another_server():
    h = Harness(servers=("e1", "e2"), server_connections=1, pipeline=3)
    patients = [f"P{i}" for i in range(12)]
    for i, patient in enumerate(patients):
        h.send(f"M{i}", patient)
    h.connect_all()
    busiest = max((link for links in h.engine.links.values() for link in links), key=lambda l: len(l.in_flight))
    on_it = [d.header.control_id.decode() for d in busiest.in_flight]
    assert len(on_it) > 1

    h.run(h.engine.link_lost(busiest))
    h.connect_all()
    while h.in_flight():
        h.ack_in_flight(next(iter(h.in_flight())))

    answers = dict((control_id, code) for code, control_id in h.reply_codes())
    assert all(answers[control_id] == "AA" for control_id in on_it)
    assert len(answers) == len(patients)


def test_two_messages_with_one_control_id_are_never_on_one_link_together():
    """An ACK names its message by MSH-10 only: two senders' messages with the same
    MSH-10 in flight on one link would make it ambiguous."""
    h = Harness(servers=("e1",), server_connections=2, pipeline=4)
    h.send("SAME", "P1", client="sender1")
    h.send("SAME", "P2", client="sender2")
    h.connect_all()
    links = h.engine.links[svc(h.runtime).server("e1")]
    assert sorted(len(link.in_flight) for link in links) == [1, 1]
