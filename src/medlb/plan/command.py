"""`medlb plan FILE [--json] [--bench RESULT]`: the command line of the sizing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medlb.config import print_problems
from medlb.plan.inputs import PlanError, load_site
from medlb.plan.rates import measured_rates
from medlb.plan.report import render
from medlb.plan.sizing import compute


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("plan", help="size an imaging site: storage, ingest, retrieval, a recommendation")
    parser.add_argument("file", help="the site's YAML (examples/plan-imaging.yaml)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--bench", help="a bench result (bench/results/latest.json) for medlb's measured rates")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit code 2 for a file that cannot be planned, as `medlb check` for a config."""
    try:
        site = load_site(args.file)
        rates = measured_rates(Path(args.bench) if args.bench else None)
    except PlanError as exc:
        print_problems(f"{exc.source}: invalid", exc.problems)
        return 2
    except ValueError as exc:
        print(f"medlb plan: {exc}", file=sys.stderr)
        return 2
    plan = compute(site, rates)
    if args.json:
        print(json.dumps(plan.as_dict(), indent=2))
    else:
        print(render(plan, args.file), end="")
    return 0
