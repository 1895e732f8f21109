"""What `medlb plan` reads: an imaging site's modalities and station classes, and the
figures a vendor published for the same site, if any (examples/plan-imaging.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from medlb.config.loader import format_path
from medlb.config.models import Strict


class Modality(Strict):
    name: str
    images_per_study: float = Field(gt=0)
    mb_per_image: float = Field(gt=0)
    studies_per_year: float = Field(ge=0)
    #: The vendor's figures for this row, shown beside the computed ones.
    published_mb_per_study: float | None = Field(None, ge=0)
    published_mb_per_year: float | None = Field(None, ge=0)


class StationClass(Strict):
    name: str
    count: float = Field(gt=0)
    studies_per_hour: float = Field(ge=0)
    mb_per_study: float = Field(gt=0)
    published_mbit_s: float | None = Field(None, ge=0)


class Rate(Strict):
    """A published rate as written ("1.9 GB/s"): the number and the unit it claims."""

    value: float
    unit: str


RATE_UNITS = {"mbit/s": 1.0, "gbit/s": 1000.0, "mb/s": 8.0, "gb/s": 8000.0}


def parse_rate(text: str) -> Rate:
    match = re.fullmatch(r"\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([A-Za-z]+/s)\s*", text)
    if not match or match.group(2).lower() not in RATE_UNITS:
        raise ValueError(f"a rate such as 1.9 GB/s or 500 Mbit/s (units: Mbit/s, Gbit/s, MB/s, GB/s), got {text!r}")
    return Rate(value=float(match.group(1).replace(",", "")), unit=match.group(2))


class Published(Strict):
    storage_mb_per_year: float | None = Field(None, ge=0)
    storage_gb_per_day: float | None = Field(None, ge=0)
    #: The ingest rate as the vendor wrote it, unit included ("1.9 GB/s").
    ingest: Rate | None = None
    retrieval_mbit_s: float | None = Field(None, ge=0)

    @field_validator("ingest", mode="before")
    @classmethod
    def _rate(cls, value: object) -> object:
        return parse_rate(value) if isinstance(value, str) else value


class Site(Strict):
    site: str = "imaging site"
    modalities: list[Modality] = Field(min_length=1)
    stations: list[StationClass] = []
    #: The hours of a day over which the day's studies arrive: 24 gives the average;
    #: fewer (the hours most studies arrive in) give a peak.
    ingest_hours: float = Field(24.0, gt=0, le=24)
    published: Published = Published()


class PlanError(Exception):
    """The file cannot be planned; `problems` say where and why."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def load_site(path: str | Path) -> Site:
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(source, [f"cannot read it: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PlanError(source, [f"{where}not YAML: {getattr(exc, 'problem', exc)}"]) from None
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise PlanError(source, [f"{format_path(error['loc']) or 'the file'}: {error['msg']}" for error in exc.errors()]) from None

