"""Routing associations by AE title, and the bounded association counters."""

from __future__ import annotations

import pytest
from pynetdicom.tests import encoded_pdu_items as vectors

from medlb.config.models import DicomConfig
from medlb.protocols.dicom import CALLED_AE, CALLING_AE, AssociateRequest, parse_associate_rq
from medlb.runtime import CheckResult
from medlb.runtime.dicom import MAX_AE_LABELS, DicomRouter, DicomStats

from runtime_helpers import make_runtime, reload, server, svc

ISSUE = DicomConfig(
    allowed_calling_aes=["CT1", "MR1", "WS*"],
    routes=[{"called_ae": "ARCHIVE", "pool": "archive"}, {"calling_ae": "CT*", "pool": "default"}],
)


@pytest.mark.parametrize("calling, called, pool, reject", [
    ("CT1", "ARCHIVE", "archive", None),        # the first route wins
    ("MR1", "ARCHIVE", "archive", None),
    ("CT1", "MEDLB", "default", None),          # the second route
    ("WS7", "MEDLB", "default", None),          # no route matches: the default pool
    ("WS", "ARCHIVE", "archive", None),         # WS* matches WS itself
    ("US1", "ARCHIVE", None, (1, 1, 3)),        # not allowed: checked before routes
    ("ct1", "MEDLB", None, (1, 1, 3)),          # AE titles compare case-sensitively
    ("", "MEDLB", None, (1, 1, 3)),             # a blank calling AE is not allowed
])
def test_the_issue_routes(calling, called, pool, reject):
    route = DicomRouter(ISSUE).route(calling, called)
    assert (route.pool, route.reject) == (pool, reject)


def test_unrouted_reject_answers_called_ae_not_recognised():
    router = DicomRouter(DicomConfig(routes=[{"called_ae": "PACS", "pool": "default"}], unrouted="reject"))
    assert router.route("ANY", "PACS").pool == "default"
    route = router.route("ANY", "OTHER")
    assert (route.pool, route.reject, route.reason) == (None, (1, 1, 7), "called-ae-not-routed")


def test_a_route_with_both_fields_needs_both_and_one_with_neither_matches_all():
    router = DicomRouter(DicomConfig(routes=[
        {"called_ae": "ARCH?VE", "calling_ae": "[CM]R1", "pool": "a"}, {"pool": "b"}]))
    assert router.route("CR1", "ARCHIVE").pool == "a"
    assert router.route("CR1", "PACS").pool == "b"
    assert router.route("XR1", "ARCHIVE").pool == "b"


def test_ae_labels_are_bounded_and_counted_down_where_they_were_counted_up():
    stats = DicomStats()
    slots = [stats.opened(f"MOD{i}", "PACS") for i in range(MAX_AE_LABELS + 10)]
    assert len(stats.by_calling_ae) == MAX_AE_LABELS + 1
    assert stats.by_calling_ae["other"].active == 10
    assert stats.by_called_ae["PACS"].active == MAX_AE_LABELS + 10
    for slot in slots:
        stats.closed(slot, 0.5)
    assert stats.active == 0 and stats.total == MAX_AE_LABELS + 10
    assert all(count.active == 0 for count in stats.by_calling_ae.values())
    assert stats.duration.count == MAX_AE_LABELS + 10
    assert dict(stats.duration.cumulative())["0.5"] == MAX_AE_LABELS + 10


def test_a_dicom_service_has_a_router_and_keeps_its_counters_across_a_reload():
    runtime = make_runtime({"a": 1}, mode="dicom")
    stats = svc(runtime).dicom
    assert stats is not None and svc(runtime).router is not None
    stats.reject("no-server")
    reload(runtime, {"a": 1, "b": 1}, mode="dicom")
    assert svc(runtime).dicom is stats and stats.rejects["no-server"] == 1
    reload(runtime, {"a": 1})
    assert svc(runtime).dicom is None and svc(runtime).router is None


def test_echo_round_trips_feed_a_per_server_histogram():
    runtime = make_runtime({"a": 1}, mode="dicom")
    runtime.apply(CheckResult("svc", "a", True, "C-ECHO status 0x0000", 0.02, echo_seconds=0.004))
    runtime.apply(CheckResult("svc", "a", True, "TCP", 0.02))
    histogram = server(runtime, "a").echo_latency
    assert histogram is not None and histogram.count == 1 and dict(histogram.cumulative())["0.005"] == 1


def request(calling: bytes, called: bytes) -> AssociateRequest:
    pdu = bytearray(vectors.a_associate_rq)
    pdu[CALLING_AE], pdu[CALLED_AE] = calling.ljust(16), called.ljust(16)
    return parse_associate_rq(bytes(pdu))


@pytest.mark.parametrize("calling, called, reject, reason", [
    (b"CT\x01", b"ARCHIVE", (1, 1, 3), "calling-ae-invalid"),   # though "CT?" would match CT*
    (b"CT1", b"ARCH\\IVE", (1, 1, 7), "called-ae-invalid"),
    (b"CT\\1", b"ARCH\nIVE", (1, 1, 3), "calling-ae-invalid"),  # both wrong: the calling one first
])
def test_invalid_ae_titles_are_refused_permanently_before_any_policy(calling, called, reject, reason):
    route = DicomRouter(ISSUE).decide(request(calling, called))
    assert (route.pool, route.reject, route.reason) == (None, reject, reason)


def test_valid_titles_are_decided_by_the_policy():
    assert DicomRouter(ISSUE).decide(request(b"CT1", b"ARCHIVE")).pool == "archive"
    assert DicomRouter(ISSUE).decide(request(b"US1", b"ARCHIVE")).reason == "calling-ae-not-allowed"
