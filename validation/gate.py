"""`robolake validate <dataset>[:<version>]`: the quality gate.

Every check of validation/checks.py gives a table (DuckDB over the lake's views) and
its expectations; Great Expectations validates each table as a pandas dataframe asset
(GX has no DuckDB datasource), with each expectation's severity from validation/gate.yaml.
Writes lake/reports/<dataset>/<version>/validate.json (DVC metrics),
validate_details.json (every expectation, with examples) and GX Data Docs
(data_docs/index.html beside them), prints each failed expectation with counts and a few
offending ids, and exits 1 when an error-severity expectation fails."""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.progress import Progress

from robolake import progress
from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.lake import GoldVersion, Lake
from robolake.lake_views import connect_version
from robolake.names import dataset_argument
from robolake.staging import staged
from robolake.storage import join, write_json
from validation.checks import CHECKS, Check, GateInputs

CONFIG = Path(__file__).with_name("gate.yaml")
GX_SEVERITY = {"error": "critical", "warning": "warning"}
EXAMPLES = 5


@dataclass
class Outcome:
    """One expectation's result, as the summary and validate.json report it."""

    check: str
    expectation: str
    column: str
    severity: str
    success: bool
    elements: int
    unexpected: int
    examples: list[str]
    description: str  # the rule the check holds the data to
    unit: str  # what its elements are: "episodes", "dimensions", ...


def load_config(dataset: str, path: Path = CONFIG) -> dict:
    """The gate settings for one dataset: the defaults with its overrides merged in."""
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    config = dict(document["defaults"])
    overrides = (document.get("datasets") or {}).get(dataset) or {}
    unknown = set(overrides) - set(config)
    if unknown:
        raise RobolakeError(f"{path}: datasets.{dataset}: unknown settings {sorted(unknown)} (allowed: {sorted(config)})")
    for key, value in overrides.items():
        unknown = set(value) - set(config[key]) if isinstance(config[key], dict) and key != "severity" else set()
        if unknown:
            raise RobolakeError(f"{path}: datasets.{dataset}.{key}: unknown settings {sorted(unknown)} "
                                f"(allowed: {sorted(config[key])})")
        config[key] = {**config[key], **value} if isinstance(config[key], dict) else value
    bad = {name: s for name, s in config["severity"].items() if s not in GX_SEVERITY}
    if bad or set(config["severity"]) != {check.__name__ for check in CHECKS}:
        raise RobolakeError(f"{path}: severity must give error or warning for each check "
                            f"{sorted(check.__name__ for check in CHECKS)}, got {config['severity']}")
    return config


class GxRunner:
    """An ephemeral GX context with one pandas data source and a Data Docs site on disk."""

    def __init__(self, docs_dir: str):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        for name in list(logging.root.manager.loggerDict):  # GX sets some of its loggers to INFO
            if name.startswith("great_expectations"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.context.add_data_docs_site(site_name="robolake", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": os.path.abspath(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        self.source = self.context.data_sources.add_pandas("lake")

    def validate(self, check: Check, severity: str) -> list:
        gx = self.gx
        batch = self.source.add_dataframe_asset(check.name).add_batch_definition_whole_dataframe(check.name)
        suite = self.context.suites.add(gx.ExpectationSuite(name=check.name, meta={"description": check.description}))
        for expectation in check.expectations:
            expectation.severity = GX_SEVERITY[severity]
            suite.add_expectation(expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=check.name, data=batch, suite=suite))
        checkpoint = self.context.checkpoints.add(gx.Checkpoint(
            name=check.name, validation_definitions=[definition],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [check.id_column]},
        ))
        result = checkpoint.run(batch_parameters={"dataframe": check.table})
        return [r for run in result.run_results.values() for r in run.results]

    def build_data_docs(self) -> None:
        """Data Docs of every validation run so far (built once: each build renders them all)."""
        self.context.build_data_docs(site_names=["robolake"])


ELEMENT_UNITS = {"episode_id": "episodes", "episode": "episodes", "dimension": "dimensions"}


def _outcome(check: Check, severity: str, result) -> Outcome:
    details = result.result or {}
    ids = [str(row.get(check.id_column)) for row in details.get("unexpected_index_list") or []]
    if result.exception_info and result.exception_info.get("raised_exception"):
        ids = [f"GX raised: {result.exception_info.get('exception_message')}"]
    return Outcome(
        check.name, result.expectation_config.type, result.expectation_config.kwargs.get("column", ""), severity,
        bool(result.success), int(details.get("element_count") or 0), int(details.get("unexpected_count") or 0),
        list(dict.fromkeys(ids))[:EXAMPLES], check.description, ELEMENT_UNITS.get(check.id_column, "rows"),
    )


def run_gate(lake: Lake, target: GoldVersion, config: dict) -> tuple[list[Outcome], list[Check]]:
    """Run every check of one dataset version; returns the outcomes and the skipped checks."""
    inputs = GateInputs(connect_version(lake, target), lake, target.spec, target.manifest,
                        target.statistics, target.gold_dir, config)
    outcomes, skipped = [], []
    # Data Docs are written in a local folder, then moved (or, to an object store, uploaded) in place
    with staged(join(lake.reports(target.dataset, target.version), "data_docs")) as docs_dir, \
            Progress(console=progress.console, transient=True) as bar:
        os.makedirs(docs_dir)  # a read-only lake fails here, once: GX would log a traceback for every page
        runner = GxRunner(docs_dir)
        task = bar.add_task(f"validate {target.dataset} {target.version}", total=len(CHECKS))
        for build in CHECKS:
            check = build(inputs)
            if check.skipped:
                skipped.append(check)
            else:
                severity = config["severity"][check.name]
                outcomes += [_outcome(check, severity, r) for r in runner.validate(check, severity)]
            bar.advance(task)
        runner.build_data_docs()
    return outcomes, skipped


def _key(outcome: Outcome) -> str:
    return f"{outcome.check}.{outcome.column}" if outcome.column else outcome.check


def results_documents(target: GoldVersion, outcomes: list[Outcome], skipped: list[Check]) -> tuple[dict, dict]:
    """validate.json (the verdict and unexpected counts: DVC metrics) and
    validate_details.json (every expectation with severity, counts and examples)."""
    failed = [o for o in outcomes if not o.success]
    metrics = {
        "passed": not any(o.severity == "error" for o in failed),
        "expectations": len(outcomes),
        "failed_errors": sum(o.severity == "error" for o in failed),
        "failed_warnings": sum(o.severity == "warning" for o in failed),
        "unexpected": {_key(o): o.unexpected for o in outcomes},
    }
    details = {
        "dataset": target.dataset,
        "version": target.version,
        **metrics,
        "checks": {
            _key(o): {"expectation": o.expectation, "description": o.description, "severity": o.severity,
                      "success": o.success, "elements": o.elements, "unexpected": o.unexpected, "examples": o.examples}
            for o in outcomes
        },
        "skipped": {check.name: check.skipped for check in skipped},
    }
    return metrics, details


def print_summary(outcomes: list[Outcome], skipped: list[Check]) -> None:
    for o in outcomes:
        if not o.success:
            mark = "FAIL " if o.severity == "error" else "WARN "
            found = f"{o.unexpected} of {o.elements} {o.unit} break" if o.elements else "failed"
            print(f"{mark}{o.check}: {found} the rule \"{o.description}\" ({o.expectation} on {o.column})")
            if o.examples:
                print(f"      e.g. {', '.join(o.examples)}")
    for check in skipped:
        print(f"skip {check.name}: {check.skipped}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="robolake validate", description="Run the quality gate on a dataset version.")
    parser.add_argument("dataset", type=dataset_argument, help="NAME or NAME:VERSION (default: the latest version)")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--config", default=str(CONFIG), help=f"gate settings YAML (default: {CONFIG.name} in validation/)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    lake = Lake(args.lake)
    target = lake.resolve(args.dataset)
    config = load_config(target.dataset, Path(args.config))
    outcomes, skipped = run_gate(lake, target, config)
    document, details = results_documents(target, outcomes, skipped)
    reports = lake.reports(target.dataset, target.version)
    write_json(join(reports, "validate.json"), document)
    write_json(join(reports, "validate_details.json"), details)
    print_summary(outcomes, skipped)
    verdict = "PASSED" if document["passed"] else "FAILED"
    print(
        f"gate {target.dataset} {target.version}: {verdict}: {len(outcomes)} expectations, "
        f"{document['failed_errors']} errors, {document['failed_warnings']} warnings, {len(skipped)} checks skipped "
        f"in {time.time() - started:.1f} s -> {reports}/validate.json, {reports}/data_docs/index.html"
    )
    return 0 if document["passed"] else 1
