"""`robolake summary`: what a lake holds, in one screen (the end of `make demo`).

Per published dataset version: episodes written and quarantined (its manifest), the
quality gate's result (validate.json), the worst normalized dimension's share of train
values at the +-1 bound (the manifest's saturation), the under-sampled metadata values and,
per behaviour check, the episodes it flags (coverage.json). Per training run: the dataset it was trained on (its checkpoint's
provenance), the best validation loss (summary.json), the closed-loop success rate with
its 95% interval and the instruction-swap check's rate of going to the named object
(eval/eval.json). Then the paths of the HTML reports. Whatever a stage has not written
yet is said so in its cell. It reads the outputs of every stage, so it
sits above them, beside the command table."""

from __future__ import annotations

import json
from dataclasses import dataclass

from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.lake import GoldVersion, Lake
from robolake.storage import exists, join, list_files, read_json
from training.eval_report import success_text, swap_text

WIDTH = 100  # columns the summary fits in
FLAG_COLUMNS = 30  # the behaviour check's name and count columns, beside the dataset names
BUNDLES = ("best", "last")  # a run's checkpoint bundles; the first there names the run's dataset


def _document(path: str) -> dict | None:
    """The JSON file at `path`, None when it is absent."""
    if not exists(path):
        return None
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise RobolakeError(f"{path}: not valid JSON: {exc}") from None


@dataclass
class DatasetSummary:
    name: str  # NAME:VERSION
    written: int
    quarantined: int
    gate: str
    saturation: str
    under_sampled: str
    flagged: list[list[str]]  # per behaviour check flagging episodes: check, count, ids
    reports: list[str]  # HTML pages that exist


@dataclass
class RunSummary:
    name: str
    trained_on: str
    val_loss: str
    success: str
    swap: str  # the instruction-swap check
    started_at: str  # "" when no checkpoint says
    reports: list[str]


def gate_result(validate: dict | None) -> str:
    """validate.json as "passed", "passed, 1 warning", "FAILED: 2 errors, 1 warning"."""
    if validate is None:
        return "not run"
    failed = [f"{n} {kind}{'s' if n > 1 else ''}" for n, kind in
              ((validate["failed_errors"], "error"), (validate["failed_warnings"], "warning")) if n]
    if validate["passed"]:
        return ", ".join(["passed", *failed])
    return "FAILED: " + ", ".join(failed)


def worst_saturation(saturation: dict) -> str:
    """The normalized dimension (action or state) with the largest share at +-1."""
    shares = {**saturation["action"], **saturation["state"]}
    if not shares:
        return "none normalized"
    worst = max(shares, key=shares.get)
    return f"{shares[worst]:.1%} ({worst})"


def under_sampled_values(coverage: dict | None, room: int) -> str:
    """coverage.json's under-sampled count and as many of the values ("color=yellow") as fit `room` columns."""
    if coverage is None:
        return "no coverage report"
    values = coverage.get("flagged")  # ["lighting=side", ...]
    if values is None:  # written before reports named their flags' values
        return f"{coverage['under_sampled']} (run robolake report again to list them)"
    if not values:
        return "none"
    texts = [f"{len(values)}: " + ", ".join(values[:n]) + (f", +{len(values) - n} more" if n < len(values) else "")
             for n in range(len(values), 0, -1)]  # longest first
    return next((text for text in texts if len(text) <= room), texts[-1])


def flagged_episodes(coverage: dict | None, room: int) -> list[list[str]]:
    """coverage.json's episodes flagged by the behaviour checks: per check that flags any,
    [check, count, as many ids, worst first, as fit `room` columns]; else one row saying why none."""
    if coverage is None:
        return [["no coverage report", "", ""]]
    quality = coverage.get("episode_quality")
    if quality is None:  # written before reports checked episode behaviour
        return [["not checked (run robolake report again)", "", ""]]
    checks = {name: check["episodes"] for name, check in quality["checks"].items() if check.get("episodes")}
    if not checks:
        skipped = {name: check["skipped"] for name, check in quality["checks"].items() if "skipped" in check}
        if len(skipped) == len(quality["checks"]):
            return [[f"skipped: {next(iter(skipped.values()))}", "", ""]]
        return [["none" + (f" ({', '.join(skipped)} skipped)" if skipped else ""), "", ""]]
    rows = []
    for name, episodes in sorted(checks.items(), key=lambda item: -len(item[1])):
        ids = [text.split(" (")[0] for text in episodes]  # "episode_0042 (2.10 toggles/s)" -> its id
        texts = [", ".join(ids[:n]) + (f", +{len(ids) - n} more" if n < len(ids) else "")
                 for n in range(len(ids), 0, -1)]  # longest first
        rows.append([name, str(len(ids)), next((t for t in texts if len(t) <= room), texts[-1])])
    return rows


def dataset_summary(lake: Lake, dataset: str, version: str, room: int) -> DatasetSummary:
    manifest = GoldVersion(dataset, version, lake.gold(dataset, version)).manifest
    reports = lake.reports(dataset, version)
    pages = [join(reports, "coverage.html"), join(reports, "data_docs", "index.html")]
    coverage = _document(join(reports, "coverage.json"))
    return DatasetSummary(
        f"{dataset}:{version}", manifest["counts"]["episodes_written"], manifest["counts"]["episodes_quarantined"],
        gate_result(_document(join(reports, "validate.json"))), worst_saturation(manifest["saturation"]),
        under_sampled_values(coverage, room), flagged_episodes(coverage, room - FLAG_COLUMNS),
        [p for p in pages if exists(p)])


def closed_loop(evaluation: dict | None) -> str:
    """eval.json's rollouts as `robolake evaluate` prints them: "3 of 30 (10%, 95% CI 3%-26%)"."""
    if evaluation is None:
        return "not evaluated"
    if "rollouts" not in evaluation:
        return "no rollouts (--rollouts 0)"
    paired = evaluation.get("baseline_rollouts", {}).get("paired")
    return success_text(evaluation["rollouts"]) + (f"; against its baseline: {paired['verdict']}" if paired else "")


def instruction_swap(evaluation: dict | None) -> str:
    """eval.json's instruction-swap check: "went to the named object 2 of 30 (7%, 95% CI 2%-21%)"."""
    if evaluation is None:
        return "not evaluated"
    if "instruction_swap" not in evaluation:
        return "not run (--rollouts 0 or --swap-rollouts 0)"
    return swap_text(evaluation["instruction_swap"])


def run_summary(lake: Lake, name: str) -> RunSummary:
    folder = lake.run_dir(name)
    provenance = next((document for bundle in BUNDLES
                       if (document := _document(join(folder, bundle, "provenance.json")))), {})
    evaluation = _document(join(folder, "eval", "eval.json"))
    dataset = provenance.get("dataset") or (evaluation or {}).get("trained_on")
    summary = _document(join(folder, "summary.json"))
    val_loss = (f"{summary['best_val_loss']:.3f} (step {summary['best_step']})" if summary
                else "no summary.json (not finished)")
    report = join(folder, "eval", "eval.html")
    return RunSummary(name, f"{dataset['name']}:{dataset['version']}" if dataset else "unknown", val_loss,
                      closed_loop(evaluation), instruction_swap(evaluation), provenance.get("started_at", ""),
                      [report] if exists(report) else [])


def run_names(lake: Lake) -> list[str]:
    """Folders under runs/ with a summary, a checkpoint bundle or an evaluation."""
    root = lake.runs_root().rstrip("/") + "/"
    patterns = ["summary.json", *(join(b, "provenance.json") for b in BUNDLES), join("eval", "eval.json")]
    found = [path for pattern in patterns for path in list_files(join(root, "*", pattern))]
    return sorted({path[len(root):].split("/")[0] for path in found})


def aligned(rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Rows of cells as lines, columns two spaces apart; the columns in `right` right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def render(lake: Lake, datasets: list[DatasetSummary], runs: list[RunSummary]) -> str:
    lines = [f"robolake summary of {lake.root}", ""]
    if datasets:
        lines += aligned([["dataset", "written", "quarantined", "gate", "at +-1 (worst)"]]
                         + [[d.name, str(d.written), str(d.quarantined), d.gate, d.saturation]
                            for d in datasets], right=(1, 2))
        lines += [""] + aligned([["dataset", "under-sampled values"]]
                                + [[d.name, d.under_sampled] for d in datasets])
        lines += [""] + aligned([["dataset", "behaviour check", "flagged", "episodes (worst first)"]]
                                + [[d.name if i == 0 else "", *row] for d in datasets for i, row in enumerate(d.flagged)],
                                right=(2,))
    else:
        lines.append("datasets: none published yet (robolake convert)")
    lines.append("")
    if runs:
        lines += aligned([["run", "trained on", "best val loss", "closed-loop success"]]
                         + [[r.name, r.trained_on, r.val_loss, r.success] for r in runs])
        lines += [""] + aligned([["run", "instruction swap (another object named)"]]
                                + [[r.name, r.swap] for r in runs])
    else:
        lines.append(f"runs: none in {lake.runs_root()} yet (robolake train)")
    pages = [(item.name, page) for item in [*datasets, *runs] for page in item.reports]
    if pages:
        lines += ["", "HTML reports"] + aligned([[name if i == 0 or pages[i - 1][0] != name else "", page]
                                                for i, (name, page) in enumerate(pages)])
    return "\n".join(lines)


def summarize(lake: Lake) -> str:
    # versions in the order they were built (build ids sort by start time), runs in the order they started
    published = sorted(lake.published(), key=lambda pair: lake.current(*pair)["build"])
    names = run_names(lake)
    if not published and not names:
        raise RobolakeError(f"{lake.root}: no published dataset version and no training run there "
                            f"(--lake names the lake folder; default: lake)")
    room = WIDTH - 2 - max([len("dataset")] + [len(f"{d}:{v}") for d, v in published])  # beside the names
    datasets = [dataset_summary(lake, d, v, room) for d, v in published]
    runs = sorted((run_summary(lake, name) for name in names), key=lambda r: (not r.started_at, r.started_at, r.name))
    return render(lake, datasets, runs)


def run(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="robolake summary",
        description="summarize a lake: per dataset version its episodes, gate, saturation and under-sampled "
                    "values; per training run its validation loss and closed-loop success; the HTML reports")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    args = parser.parse_args(argv)
    print(summarize(Lake(args.lake).existing()))
    return 0
