"""`medlb plan`: every figure of the reference site (examples/plan-imaging.yaml, the
issue's tables as published), computed from its inputs, beside the published ones with
the reason for each difference; the recommendation; where the measured rates come from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medlb.cli import main
from medlb.plan import MeasuredRates, PlanError, compute, load_site
from medlb.plan.rates import SHIPPED, measured_rates
from medlb.plan.sizing import Plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/plan-imaging.yaml"
RATES = MeasuredRates(relay_gbit_s=20.0, dicom_instances_per_s=1102, source="test")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compute(load_site(EXAMPLE), RATES)


def comparison(plan: Plan, figure: str):  # type: ignore[no-untyped-def]
    return next(c for c in plan.published if c.figure.startswith(figure))


# --- storage -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,mb_per_study,mb_per_year", [
    ("Cardiology", 486.42, 4_864_200), ("CT multi-slice", 208.00, 4_160_000), ("CT 64-slice", 1_020.00, 102_000_000),
    ("CT 128-slice", 2_040.00, 408_000_000), ("Fluoroscopy", 47.04, 2_352_000), ("Mammography", 104.00, 2_080_000),
    ("MRI", 72.00, 720_000), ("Ultrasound", 30.00, 900_000)])
def test_each_modality_s_storage_is_computed_from_its_inputs(plan, name, mb_per_study, mb_per_year):
    line = next(m for m in plan.modalities if m.name == name)

    assert line.mb_per_study == pytest.approx(mb_per_study)
    assert line.mb_per_year == pytest.approx(mb_per_year)


def test_the_site_stores_525_076_200_mb_a_year_not_the_published_315_076_200(plan):
    total = comparison(plan, "storage, total")

    assert plan.studies_per_year == 440_000
    assert plan.mb_per_year == pytest.approx(525_076_200)
    assert total.published == 315_076_200 and not total.same
    assert "CT 64-slice +2,000,000" in total.explanation and "CT 128-slice +208,000,000" in total.explanation


@pytest.mark.parametrize("row,studies", [("CT 64-slice", "100,000"), ("CT 128-slice", "200,000")])
def test_the_ct_rows_publish_1000_mb_per_study_against_their_own_table(plan, row, studies):
    ct = comparison(plan, f"{row} storage")

    assert not ct.same
    assert f"1,000 MB per study × {studies} studies" in ct.explanation
    assert "does not follow from the published table" in ct.explanation
    others = [c for c in plan.published if c.figure.endswith(" storage") and not c.figure.startswith("CT ")
              or c.figure == "CT multi-slice storage"]
    assert len(others) == 6 and all(c.same for c in others)


def test_863_gb_a_day_is_the_published_year_over_365_days(plan):
    per_day = comparison(plan, "storage per day")

    assert per_day.published == 863
    assert round(315_076_200 / 365 / 1000) == 863
    assert plan.mb_per_day == pytest.approx(1_438_565, abs=1)
    assert round(per_day.computed) == 1_439
    assert "÷ 365" in per_day.explanation and "863,222 MB" in per_day.explanation


def test_the_published_1_9_gb_s_is_863_gb_moved_in_one_hour_in_gbit_s(plan):
    ingest = comparison(plan, "ingest")

    assert round(863_222 * 8 / 3600) == 1_918  # Mbit/s: 1.9 Gbit/s
    assert ingest.published == pytest.approx(1_900)
    assert ingest.computed == pytest.approx(plan.day_in_one_hour_mbit_s)
    assert round(plan.day_in_one_hour_mbit_s) == 3_197
    for words in ("863 GB (the published day) moved in one hour is 1,918 Mbit/s", "in Gbit/s, not GB/s",
                  "15,200 Mbit/s, 8 times more", "over 24 hours that day is 80 Mbit/s"):
        assert words in ingest.explanation, ingest.explanation


def test_ingest_over_the_day(plan):
    assert round(plan.ingest_mbit_s) == 133
    assert plan.images_per_year == 1_014_700_000
    assert plan.ingest_images_per_s == pytest.approx(1_014_700_000 / 365 / 86_400)


# --- retrieval -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,mbit_s,same", [("Reporting stations", 10_200, True), ("Concurrent users", 667, True),
                                              ("CDR PACS users", 3_200, False)])
def test_each_station_class_s_retrieval(plan, name, mbit_s, same):
    station = comparison(plan, f"{name} retrieval")

    assert round(station.computed) == mbit_s
    assert station.same is same


def test_the_third_station_class_needs_3200_mbit_s_not_533(plan):
    cdr = comparison(plan, "CDR PACS users retrieval")

    assert cdr.published == 533 and cdr.computed == pytest.approx(3_200)
    assert "1/6 of that" in cdr.explanation and "100 stations" in cdr.explanation
    assert "10 MB/study" in cdr.explanation


def test_retrieval_totals_14067_mbit_s_not_11400(plan):
    total = comparison(plan, "retrieval, total")

    assert round(plan.retrieval_mbit_s) == 14_067
    assert total.published == 11_400 and 10_200 + 667 + 533 == 11_400
    assert "CDR PACS users +2,667" in total.explanation


# --- the recommendation ----------------------------------------------------------------------


def test_retrieval_dominates_so_direct_routing_and_a_small_nic_on_the_balancer(plan):
    recommendation = plan.recommendation

    assert plan.retrieval_to_ingest == pytest.approx(14_066.67 / 133.18, rel=1e-3)
    assert recommendation["direct_routing"] is True
    assert recommendation["nic_gbit_s"] == 1  # ingest alone passes the balancer
    assert recommendation["nic_without_direct_routing_gbit_s"] == 25  # 14,200 Mbit/s at 70% of a NIC
    assert recommendation["one_node"] is True
    assert "mode l4-dr" in recommendation["lines"][0]


def test_without_direct_routing_one_node_at_the_measured_rate_does_not_carry_it(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("modalities: [{name: CT, images_per_study: 2000, mb_per_image: 0.5, studies_per_year: 100000}]\n"
                    "stations: [{name: viewers, count: 10, studies_per_hour: 10, mb_per_study: 1000}]\n"
                    "ingest_hours: 1\n")

    planned = compute(load_site(site), MeasuredRates(relay_gbit_s=1.5, dicom_instances_per_s=1000, source="test"))

    assert planned.retrieval_to_ingest < 2  # 222 against 609 Mbit/s
    recommendation = planned.recommendation
    assert recommendation["direct_routing"] is False
    assert recommendation["one_node"] is False and recommendation["nodes"] == 2  # 831 Mbit/s: 55% of 1.5 Gbit/s
    assert "does not carry" in recommendation["lines"][2]


# --- measured rates ------------------------------------------------------------------------


def test_the_shipped_rates_are_those_docs_performance_md_reports():
    rates = measured_rates(SHIPPED)
    performance = (ROOT / "docs/performance.md").read_text()

    assert (rates.relay_gbit_s, rates.dicom_instances_per_s) == (20.0, 1102)
    assert "| 20.0 Gbit/s |" in performance and "| 1,102 /s |" in performance


def bench_result(path: Path, quick: bool) -> Path:
    path.write_text(json.dumps({"started": 0, "quick": quick, "rows": [
        {"scenario": "TCP bulk throughput, 8 stream(s), 2 workers vs nbthread 2", "unit": "Gbit/s", "medlb": 31.5},
        {"scenario": "DICOM C-STORE of 500 instances (storescu to storescp), 1 worker", "unit": "instances/s",
         "medlb": 2000}]}))
    return path


def test_a_full_bench_run_is_used_and_named(tmp_path):
    rates = measured_rates(bench_result(tmp_path / "latest.json", quick=False))

    assert (rates.relay_gbit_s, rates.dicom_instances_per_s) == (31.5, 2000)
    assert str(tmp_path / "latest.json") in rates.source


@pytest.mark.parametrize("quick,used", [(False, "checkout"), (True, "shipped")])
def test_without_bench_the_checkout_s_last_full_run_is_used_else_the_shipped_figures(tmp_path, monkeypatch,
                                                                                     quick, used):
    from medlb.plan import rates as rates_module

    monkeypatch.setattr(rates_module, "CHECKOUT_RESULTS", bench_result(tmp_path / "latest.json", quick=quick))

    rates = measured_rates()

    assert rates.relay_gbit_s == (31.5 if used == "checkout" else 20.0)
    assert ("latest.json" in rates.source) is (used == "checkout")


def test_a_quick_bench_run_is_refused_as_a_measure(tmp_path):
    with pytest.raises(ValueError, match="full run"):
        measured_rates(bench_result(tmp_path / "latest.json", quick=True))


# --- the command ---------------------------------------------------------------------------


def test_medlb_plan_prints_the_tables_with_published_figures_marked(capsys):
    assert main(["plan", str(EXAMPLE), "--bench", str(SHIPPED)]) == 0
    out = capsys.readouterr().out

    assert re.search(r"total\s+440,000\s+525,076,200\s+1,438.6\s+315,076,200 \*", out), out
    assert re.search(r"CDR PACS users\s+600\s+40\s+60\s+3,200\s+533 \*", out), out
    assert re.search(r"total\s+14,067\s+11,400 \*", out), out
    assert "Retrieval / ingest: 105.6" in out
    assert "1,918 Mbit/s" in out.replace("\n    ", " ")


def test_medlb_plan_json_holds_every_figure(capsys):
    assert main(["plan", str(EXAMPLE), "--json", "--bench", str(SHIPPED)]) == 0
    data = json.loads(capsys.readouterr().out)

    assert data["mb_per_year"] == 525_076_200 and round(data["retrieval_mbit_s"]) == 14_067
    published = {item["figure"]: item for item in data["published"]}
    assert published["storage, total"]["published"] == 315_076_200
    assert published["CDR PACS users retrieval"]["computed"] == 3_200
    assert data["recommendation"]["direct_routing"] is True
    assert data["modalities"][0]["mb_per_study"] == 486.42


def test_a_wrong_value_is_refused_with_its_path(tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text("modalities: [{name: CT, images_per_study: 10, mb_per_image: 0.5, studies_per_year: 1}]\n"
                    "stations: [{name: viewers, count: -1, studies_per_hour: 10, mb_per_study: 1}]\n")

    assert main(["plan", str(site)]) == 2
    assert "stations[0].count: Input should be greater than 0" in capsys.readouterr().err
    with pytest.raises(PlanError):
        load_site(site)
