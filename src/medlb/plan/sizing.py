"""The arithmetic of `medlb plan`: storage, ingest and retrieval computed from a site's
inputs, a recommendation, and each published figure beside the computed one with the
reason they differ. No I/O: the measured rates come in as an argument.

Units: 1 GB = 1,000 MB (as storage is sold and as vendors publish), 1 Mbit/s =
1,000,000 bits a second, a year of 365 days.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medlb.plan.inputs import RATE_UNITS, Site

DAYS_PER_YEAR = 365
#: MB an hour to Mbit/s.
MB_PER_HOUR_TO_MBIT_S = 8 / 3600
#: Retrieval at least this many times ingest: the balancer would mostly relay the
#: archive's answers, which direct routing sends to the clients without it.
DR_RATIO = 2.0
#: The share of a NIC, or of medlb's measured rate, a plan may use: room for bursts,
#: and for the difference between a benchmark on loopback and a real network.
HEADROOM = 0.5
NIC_SHARE = 0.7
NIC_SIZES_GBIT_S = (1, 10, 25, 40, 100, 200, 400)
#: How close a published figure must be to a computed one to count as the same
#: (published figures are rounded).
SAME = 0.005


@dataclass
class MeasuredRates:
    """medlb's measured rates (`make bench`), and where they come from."""

    relay_gbit_s: float
    dicom_instances_per_s: float
    source: str


@dataclass
class ModalityLine:
    name: str
    images_per_study: float
    mb_per_image: float
    mb_per_study: float
    studies_per_year: float
    images_per_year: float
    mb_per_year: float
    gb_per_day: float


@dataclass
class StationLine:
    name: str
    count: float
    studies_per_hour: float
    mb_per_study: float
    mbit_s: float


@dataclass
class Comparison:
    figure: str
    unit: str
    published: float
    computed: float
    explanation: str

    @property
    def same(self) -> bool:
        return math.isclose(self.published, self.computed, rel_tol=SAME, abs_tol=0.5)


@dataclass
class Plan:
    site: str
    modalities: list[ModalityLine]
    studies_per_year: float
    images_per_year: float
    mb_per_year: float
    mb_per_day: float
    ingest_hours: float
    ingest_mbit_s: float
    ingest_images_per_s: float
    #: The day's studies arriving within one hour: the figure vendors often publish.
    day_in_one_hour_mbit_s: float
    stations: list[StationLine]
    retrieval_mbit_s: float
    retrieval_to_ingest: float | None
    recommendation: dict[str, Any] = field(default_factory=dict)
    published: list[Comparison] = field(default_factory=list)

    @property
    def gb_per_day(self) -> float:
        return self.mb_per_day / 1000

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gb_per_day"] = self.gb_per_day
        for comparison, item in zip(self.published, data["published"]):
            item["difference"] = comparison.computed - comparison.published
            item["same"] = comparison.same
        return _rounded(data)


def _rounded(value: Any) -> Any:
    """Floats to 4 decimals: 486.42, not 486.41999999999996."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def compute(site: Site, rates: MeasuredRates) -> Plan:
    modalities = [ModalityLine(m.name, m.images_per_study, m.mb_per_image, m.images_per_study * m.mb_per_image,
                               m.studies_per_year, m.images_per_study * m.studies_per_year,
                               m.images_per_study * m.mb_per_image * m.studies_per_year,
                               m.images_per_study * m.mb_per_image * m.studies_per_year / DAYS_PER_YEAR / 1000)
                  for m in site.modalities]
    stations = [StationLine(s.name, s.count, s.studies_per_hour, s.mb_per_study,
                            s.count * s.studies_per_hour * s.mb_per_study * MB_PER_HOUR_TO_MBIT_S)
                for s in site.stations]
    mb_per_year = sum(m.mb_per_year for m in modalities)
    mb_per_day = mb_per_year / DAYS_PER_YEAR
    images_per_year = sum(m.images_per_year for m in modalities)
    ingest_mbit_s = mb_per_day / site.ingest_hours * MB_PER_HOUR_TO_MBIT_S
    retrieval = sum(s.mbit_s for s in stations)
    plan = Plan(site.site, modalities, sum(m.studies_per_year for m in modalities), images_per_year, mb_per_year,
                mb_per_day, site.ingest_hours, ingest_mbit_s,
                images_per_year / DAYS_PER_YEAR / (site.ingest_hours * 3600),
                mb_per_day * MB_PER_HOUR_TO_MBIT_S, stations, retrieval,
                retrieval / ingest_mbit_s if ingest_mbit_s > 0 else None)
    plan.recommendation = recommend(plan, rates)
    plan.published = compare(site, plan)
    return plan


# --- the recommendation ---------------------------------------------------------------


def nic_for(mbit_s: float) -> int:
    """The smallest common NIC (Gbit/s) that carries `mbit_s` at NIC_SHARE of its speed."""
    for size in NIC_SIZES_GBIT_S:
        if mbit_s <= size * 1000 * NIC_SHARE:
            return size
    return NIC_SIZES_GBIT_S[-1]


def recommend(plan: Plan, rates: MeasuredRates) -> dict[str, Any]:
    """Direct routing when retrieval dominates; the balancer's NIC; and whether one
    medlb node at its measured rates carries what must pass through layer 7."""
    ratio = plan.retrieval_to_ingest
    direct = ratio is not None and ratio >= DR_RATIO
    # With direct routing the archive answers the viewers itself: the balancer carries
    # ingest (DICOM stores, routed by AE title at layer 7) and the retrieval requests.
    layer7_mbit_s = plan.ingest_mbit_s + (0.0 if direct else plan.retrieval_mbit_s)
    relay_share = layer7_mbit_s / (rates.relay_gbit_s * 1000) if rates.relay_gbit_s > 0 else math.inf
    dicom_share = (plan.ingest_images_per_s / rates.dicom_instances_per_s if rates.dicom_instances_per_s > 0
                   else math.inf)
    share = max(relay_share, dicom_share)
    nodes = max(1, math.ceil(share / HEADROOM)) if math.isfinite(share) else None
    lines = []
    if ratio is None:
        lines.append("No ingest: nothing to compare retrieval with.")
    elif direct:
        lines.append(f"Direct routing (mode l4-dr) for retrieval: it is {ratio:,.1f} times ingest, and with direct "
                     f"routing the archive sends it to the viewers without passing the balancer; ingest (DICOM "
                     f"stores routed by AE title) stays at layer 7 (mode dicom).")
    else:
        lines.append(f"Layer 7 for all of it: retrieval is {ratio:,.1f} times ingest, under the {DR_RATIO:g} at "
                     f"which direct routing pays.")
    nic = nic_for(layer7_mbit_s)
    nic_all = nic_for(plan.ingest_mbit_s + plan.retrieval_mbit_s)
    lines.append(f"NIC: {nic} Gbit/s on the balancer for {layer7_mbit_s:,.0f} Mbit/s each way (at most "
                 f"{NIC_SHARE:.0%} of it)" + (f"; {nic_all} Gbit/s if retrieval passed through it too, and the "
                                             f"archive's NICs together carry the {plan.retrieval_mbit_s:,.0f} Mbit/s "
                                             f"of retrieval" if direct else "") + ".")
    verdict = "carries" if nodes == 1 else "does not carry"
    lines.append(f"One medlb node {verdict} the layer 7 part ({layer7_mbit_s:,.0f} Mbit/s, "
                 f"{plan.ingest_images_per_s:,.1f} images/s): {relay_share:.0%} of its measured relay rate "
                 f"({rates.relay_gbit_s:g} Gbit/s) and {dicom_share:.0%} of its measured DICOM C-STORE rate "
                 f"({rates.dicom_instances_per_s:,.0f} instances/s), against {HEADROOM:.0%} allowed"
                 + ("" if nodes == 1 else f": {nodes} nodes") + f". Measured: {rates.source}.")
    return {"direct_routing": direct, "nic_gbit_s": nic, "nic_without_direct_routing_gbit_s": nic_all,
            "layer7_mbit_s": layer7_mbit_s, "layer7_images_per_s": plan.ingest_images_per_s,
            "relay_share": relay_share, "dicom_share": dicom_share, "one_node": nodes == 1, "nodes": nodes,
            "measured": asdict(rates), "lines": lines}


# --- published figures beside the computed ones ---------------------------------------------


def compare(site: Site, plan: Plan) -> list[Comparison]:
    published = site.published
    found: list[Comparison] = []
    storage_rows = []
    for given, line in zip(site.modalities, plan.modalities):
        if given.published_mb_per_year is None:
            continue
        row = Comparison(f"{line.name} storage", "MB/year", given.published_mb_per_year, line.mb_per_year,
                         _storage_row_reason(given.published_mb_per_year, given.published_mb_per_study, line))
        storage_rows.append(row)
        found.append(row)
    if published.storage_mb_per_year is not None:
        found.append(Comparison("storage, total", "MB/year", published.storage_mb_per_year, plan.mb_per_year,
                                _sum_reason(published.storage_mb_per_year, storage_rows, "storage")))
    if published.storage_gb_per_day is not None:
        found.append(Comparison("storage per day", "GB/day", published.storage_gb_per_day, plan.gb_per_day,
                                _per_day_reason(published.storage_gb_per_day, published.storage_mb_per_year, plan)))
    if published.ingest is not None:
        found.append(_ingest_comparison(site, plan))
    station_rows = []
    for given, station in zip(site.stations, plan.stations):
        if given.published_mbit_s is None:
            continue
        row = Comparison(f"{station.name} retrieval", "Mbit/s", given.published_mbit_s, station.mbit_s,
                         _station_reason(given.published_mbit_s, station))
        station_rows.append(row)
        found.append(row)
    if published.retrieval_mbit_s is not None:
        found.append(Comparison("retrieval, total", "Mbit/s", published.retrieval_mbit_s, plan.retrieval_mbit_s,
                                _sum_reason(published.retrieval_mbit_s, station_rows, "retrieval")))
    return found


def _n(value: float) -> str:
    """1,020 / 0.51 / 486.42: thousands separated, no needless decimals."""
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != round(value) else f"{value:,.0f}"


def _storage_row_reason(published: float, published_per_study: float | None, line: ModalityLine) -> str:
    computed_per_study = f"{_n(line.images_per_study)} images × {_n(line.mb_per_image)} MB = {_n(line.mb_per_study)} MB"
    if math.isclose(published, line.mb_per_year, rel_tol=SAME):
        return f"the same: {computed_per_study} per study × {_n(line.studies_per_year)} studies"
    implied = published / line.studies_per_year if line.studies_per_year else 0.0
    text = (f"the published figure is {_n(implied)} MB per study × {_n(line.studies_per_year)} studies; "
            f"the inputs give {computed_per_study} per study")
    if published_per_study is not None and not math.isclose(published_per_study, implied, rel_tol=SAME):
        text += (f", as does the table's own MB/study column ({_n(published_per_study)}): the published storage "
                 f"does not follow from the published table")
    return text


def _sum_reason(published: float, rows: list[Comparison], what: str) -> str:
    if not rows:
        return "no published rows to add up; computed from the inputs"
    total = sum(row.published for row in rows)
    if not math.isclose(total, published, rel_tol=SAME, abs_tol=0.5):
        return f"not the sum of the published rows ({_n(total)}); computed from the inputs"
    differing = [row for row in rows if not row.same]
    if not differing:
        return "the same: the sum of the rows"
    return (f"the sum of the published {what} rows, so it differs by the rows that differ: "
            + ", ".join(f"{row.figure.removesuffix(' ' + what)} {_signed(row.computed - row.published)}"
                        for row in differing))


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _n(abs(round(value)))


def _per_day_reason(published_gb: float, published_year: float | None, plan: Plan) -> str:
    if published_year is not None and math.isclose(published_gb, published_year / DAYS_PER_YEAR / 1000,
                                                   rel_tol=SAME, abs_tol=0.5):
        return (f"the published yearly total ÷ 365 days ({_n(published_year)} MB ÷ 365 = "
                f"{_n(round(published_year / DAYS_PER_YEAR))} MB, 1 GB = 1,000 MB), so it carries the yearly "
                f"total's difference; from the inputs {_n(round(plan.mb_per_day))} MB a day")
    return f"computed from the inputs: {_n(round(plan.mb_per_year))} MB a year ÷ 365 days"


def _ingest_comparison(site: Site, plan: Plan) -> Comparison:
    """A published ingest rate beside the computed rate it turns out to measure: the
    day in one hour, the day over 24 hours, or else the plan's ingest rate."""
    rate = site.published.ingest
    assert rate is not None
    label = f'ingest (published "{rate.value:g} {rate.unit}")'
    as_written = rate.value * RATE_UNITS[rate.unit.lower()]
    published = site.published
    if published.storage_gb_per_day is not None:
        day_mb = published.storage_gb_per_day * 1000
    elif published.storage_mb_per_year is not None:
        day_mb = published.storage_mb_per_year / DAYS_PER_YEAR
    else:
        day_mb = plan.mb_per_day
    day_in_hour = day_mb * MB_PER_HOUR_TO_MBIT_S
    over_day = day_mb / 24 * MB_PER_HOUR_TO_MBIT_S
    computed = (f"from the inputs the day ({_n(round(plan.gb_per_day))} GB) in one hour is "
                f"{_n(round(plan.day_in_one_hour_mbit_s))} Mbit/s, and over {_n(site.ingest_hours)} h a day "
                f"{_n(round(plan.ingest_mbit_s))} Mbit/s")
    if rate.unit.lower() in ("gb/s", "mb/s") and math.isclose(as_written / 8, day_in_hour, rel_tol=0.05):
        return Comparison(f"{label}: the day in one hour", "Mbit/s", as_written / 8, plan.day_in_one_hour_mbit_s,
                          f"{_n(round(day_mb / 1000))} GB (the published day) moved in one hour is "
                          f"{_n(round(day_in_hour))} Mbit/s, {day_in_hour / 1000:.2g} Gbit/s: the figure is in "
                          f"{rate.unit.replace('B', 'bit')}, not {rate.unit} (as {rate.unit} it would be "
                          f"{_n(round(as_written))} Mbit/s, 8 times more), and it has the whole day arrive in one "
                          f"hour; over 24 hours that day is {_n(round(over_day))} Mbit/s; {computed}")
    if math.isclose(as_written, day_in_hour, rel_tol=0.05):
        return Comparison(f"{label}: the day in one hour", "Mbit/s", as_written, plan.day_in_one_hour_mbit_s,
                          f"the published day moved in one hour; {computed}")
    if math.isclose(as_written, over_day, rel_tol=0.05):
        return Comparison(f"{label}: the day over 24 h", "Mbit/s", as_written, plan.mb_per_day / 24 *
                          MB_PER_HOUR_TO_MBIT_S, f"the published day spread over 24 hours; {computed}")
    return Comparison(label, "Mbit/s", as_written, plan.ingest_mbit_s,
                      f"matches no rate the published storage gives; {computed}")


def _station_reason(published: float, station: StationLine) -> str:
    formula = (f"{_n(station.count)} × {_n(station.studies_per_hour)} studies/hour × {_n(station.mb_per_study)} MB "
               f"× 8 bits ÷ 3,600 s = {_n(round(station.mbit_s))} Mbit/s")
    if math.isclose(published, station.mbit_s, rel_tol=SAME, abs_tol=0.5):
        return f"the same: {formula}"
    if published <= 0:
        return f"the inputs give {formula}"
    factor = station.mbit_s / published
    if round(factor) >= 2 and math.isclose(factor, round(factor), rel_tol=0.01):
        factor = round(factor)  # the published figure is rounded: 533 for 3,200 / 6
    share = f"1/{factor}" if isinstance(factor, int) else f"{1 / factor:.3g}"
    return (f"the inputs give {formula}; the published figure is {share} of that, what "
            f"{_n(round(station.count / factor, 2))} stations, or {_n(round(station.studies_per_hour / factor, 2))} "
            f"studies/hour, or {_n(round(station.mb_per_study / factor, 2))} MB/study would need")
