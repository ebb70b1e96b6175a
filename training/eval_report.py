"""Closed-loop rollouts joined to the data a checkpoint was trained on (the train split
of its dataset version): the policy's episode length and smoothness next to the
demonstrations', success per metadata value next to how many train episodes have that
value (with the coverage report's under-sampling rule, robolake/coverage_rule.py), the
values the policy is weak on with what to collect, and all of it with the offline
metrics as one self-contained page, eval.html (styled as the coverage report)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import duckdb
import numpy as np
import pandas as pd

from robolake.coverage_rule import THRESHOLD, marginals, under_sampled
from robolake.html_page import CSS, empty_note, escape_html, format_number, format_share, table_section
from robolake.lake import Lake
from robolake.lake_views import connect
from training.metrics import smoothness

WEAK_RULE = ("a value is weak when even the upper end of its success rate's 95% (Wilson) interval is below "
             "the overall success rate")
STEP_SMOOTHNESS = ("smoothness per step: an episode's sum of squared changes between consecutive actions "
                   "divided by its length - 1, averaged over episodes (comparable across episode lengths)")


# --- demonstrations against the policy -----------------------------------------------------


def step_smoothness(total: float, length: int) -> float:
    """An episode's smoothness (training.metrics.smoothness: a sum over its length - 1
    consecutive action pairs) per pair; 0 for a one-step episode."""
    return total / max(length - 1, 1)


def demonstration_episodes(lake: Lake, dataset: str, version: str) -> dict[str, list[tuple[int, float]]]:
    """(length, smoothness of the recorded raw actions) of each train episode of a
    version, by task."""
    rows = connect(lake, dataset, version).execute("""
        SELECT e.task, list(s.action_raw ORDER BY s.step_index) AS actions
        FROM steps s JOIN episodes e USING (dataset, version, episode_id)
        WHERE e.split = 'train' GROUP BY e.episode_id, e.task""").fetchall()
    by_task: dict[str, list[tuple[int, float]]] = {}
    for task, actions in rows:
        by_task.setdefault(task, []).append((len(actions), smoothness(np.asarray(actions))))
    return by_task


def _means(episodes: Sequence[tuple[int, float]]) -> tuple[float | None, float | None]:
    """Mean length and mean smoothness per step of (length, smoothness) pairs."""
    if not episodes:
        return None, None
    return (float(np.mean([length for length, _ in episodes])),
            float(np.mean([step_smoothness(total, length) for length, total in episodes])))


def _ratio(policy: float | None, demo: float | None) -> float | None:
    return None if policy is None or not demo else policy / demo


def _comparison(rollouts: Sequence[tuple[int, float]], demos: Sequence[tuple[int, float]]) -> dict:
    policy_length, policy_smoothness = _means(rollouts)
    demo_length, demo_smoothness = _means(demos)
    return {"demo_episodes": len(demos), "demo_mean_length": demo_length, "demo_mean_step_smoothness": demo_smoothness,
            "policy_rollouts": len(rollouts), "policy_mean_length": policy_length,
            "policy_mean_step_smoothness": policy_smoothness, "length_ratio": _ratio(policy_length, demo_length),
            "step_smoothness_ratio": _ratio(policy_smoothness, demo_smoothness)}


def compare_with_demonstrations(records: Sequence, lake: Lake, dataset: str, version: str) -> dict:
    """The rollouts' mean length and smoothness per step next to the train split's
    demonstrations' and their ratios (policy / demonstrations), overall and per rollout
    task; a task absent from training has no demonstrations and no ratios."""
    demos = demonstration_episodes(lake, dataset, version)
    rollouts: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        rollouts.setdefault(record.task, []).append((record.length, record.smoothness))
    return {
        "dataset": {"name": dataset, "version": version, "split": "train"},
        "smoothness": STEP_SMOOTHNESS,
        "overall": _comparison([e for es in rollouts.values() for e in es], [e for es in demos.values() for e in es]),
        "per_task": {task: _comparison(rollouts[task], demos.get(task, [])) for task in sorted(rollouts)},
    }


# --- success by metadata value against coverage -------------------------------------------


def train_marginals(lake: Lake, dataset: str, version: str, fields: Sequence[str]) -> pd.DataFrame:
    """robolake.coverage_rule.marginals of the version's train split, over those of `fields`
    the version's episodes record."""
    con = connect(lake, dataset, version)
    columns = {row[0] for row in con.execute("DESCRIBE episodes").fetchall()}
    recorded = [field for field in fields if field in columns]
    if not recorded:
        return pd.DataFrame(columns=["field", "value", "episodes", "steps", "share"])
    train = duckdb.connect()
    train.register("episodes", con.sql("SELECT * FROM episodes WHERE split = 'train'").to_arrow_table())
    return marginals(train, recorded)


def coverage_join(lake: Lake, dataset: str, version: str, by_field: dict, threshold: float = THRESHOLD) -> list[dict]:
    """One row per field and value the rollouts varied (a rollout summary's "by_field"):
    rollouts, successes, success_rate, success_ci and failure_modes, and from the version's
    train split: train_episodes with the value (0 when training lacks it), train_total,
    train_share, under_sampled (the coverage report's rule at `threshold`; a value
    training lacks is under-sampled) and collect (the rule's "collect about N more").
    The train figures are None for a field the version does not record."""
    table = train_marginals(lake, dataset, version, list(by_field))
    flags = {(flag.field, flag.value): flag for flag in under_sampled(table, threshold)}
    rows = []
    for field, values in by_field.items():
        known = table[table["field"] == field]
        counts = {str(value): int(n) for value, n in zip(known["value"], known["episodes"])}
        total = int(known["episodes"].sum()) if counts else None
        for value, outcome in values.items():
            flag = flags.get((field, str(value)))
            train = counts.get(str(value), 0) if counts else None
            rows.append({
                "field": field, "value": value, "rollouts": outcome["episodes"], "successes": outcome["successes"],
                "success_rate": outcome["success_rate"], "success_ci": outcome["success_ci"],
                "failure_modes": outcome["failure_modes"], "train_episodes": train, "train_total": total,
                "train_share": None if total is None else train / total,
                "under_sampled": None if total is None else flag is not None or train == 0,
                "collect": flag.needed if flag else None,
            })
    return rows


def is_weak(row: dict, overall_rate: float) -> bool:
    """WEAK_RULE for one coverage_join row."""
    return row["rollouts"] > 0 and row["success_ci"][1] < overall_rate


def weak_lines(rows: Sequence[dict], overall_rate: float) -> list[str]:
    """One sentence per weak value (WEAK_RULE), e.g. "color=yellow: 1 of 6 rollouts succeed;
    1 of 19 train episodes are yellow (under-sampled): collect about 3 more"."""
    lines = []
    for row in rows:
        if not is_weak(row, overall_rate):
            continue
        field, value = row["field"], row["value"]
        if row["train_episodes"] is None:
            training = f"the training data does not record {field}"
        elif row["train_episodes"] == 0:
            training = f"no train episode is {value}"
        else:
            training = f"{row['train_episodes']} of {row['train_total']} train episodes are {value}"
            if row["under_sampled"]:
                training += f" (under-sampled): collect about {row['collect']} more"
        lines.append(f"{field}={value}: {row['successes']} of {row['rollouts']} rollouts succeed; {training}")
    return lines


# --- eval.html ----------------------------------------------------------------------------


def _interval(ci: Sequence[float]) -> str:
    return f"{ci[0]:.0%}-{ci[1]:.0%}"


def _modes(counts: dict) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in sorted(counts.items(), key=lambda item: -item[1]))


def success_text(summary: dict) -> str:
    """A rollout summary's success, "7 of 10 (70%, 95% CI 40%-89%)"."""
    return (f"{summary['successes']} of {summary['episodes']} ({summary['success_rate']:.0%}, "
            f"95% CI {_interval(summary['success_ci'])})")


def baseline_text(baseline: dict) -> str:
    """The baseline's success and the paired verdict, "2 of 30 (...); this policy: no measurable
    difference (better on 3 scenes, worse on 1, p = 0.62)"."""
    text = success_text(baseline)
    paired = baseline.get("paired")  # eval.json of an earlier robolake has none
    if paired:
        text += (f"; this policy: {paired['verdict']} (better on {paired['only_this']} scenes, worse on "
                 f"{paired['only_baseline']}, exact McNemar p = {paired['p_value']:.2g})")
    return text


def swap_text(swap: dict) -> str:
    """The instruction-swap check's headline, "went to the named object 7 of 10 (70%, 95% CI 40%-89%)"."""
    named = swap["went_to_named"]
    return (f"went to the named object {named['count']} of {swap['rollouts']} ({named['rate']:.0%}, "
            f"95% CI {_interval(named['ci'])})")


def _optional(value: float | None) -> object:
    return "" if value is None else value


def _headline(document: dict) -> str:
    rollouts, baseline = document["rollouts"], document.get("baseline_rollouts")
    trained = document["trained_on"]
    about = [("checkpoint", document["checkpoint"]),
             ("trained on", f"{trained['name']} {trained['version']}"),
             ("offline metrics on", "{name} {version} {split}".format(**document["dataset"])),
             ("rollouts", f"{rollouts['episodes']} in the tabletop environment, scenes of seed {rollouts['seed']}, "
                          f"tasks {', '.join(rollouts['per_task'])}")]
    stats = [("closed-loop success", rollouts)]
    if baseline:
        about.append(("baseline", baseline["checkpoint"]))
        about.append(("against the baseline", baseline_text(baseline).split("; ", 1)[-1]))
        stats.append(("baseline success (same scenes)", baseline))
    facts = "".join(f"<dt>{escape_html(key)}</dt><dd>{escape_html(value)}</dd>" for key, value in about)
    boxes = "".join(f'<div class="stat"><b>{escape_html(format_share(summary["success_rate"]))}</b><span>{escape_html(key)}: '
                    f"{escape_html(success_text(summary))}</span></div>" for key, summary in stats)
    if "instruction_swap" in document:
        swap = document["instruction_swap"]
        boxes += (f'<div class="stat"><b>{escape_html(format_share(swap["went_to_named"]["rate"]))}</b>'
                  f'<span>instruction swap: {escape_html(swap_text(swap))}</span></div>')
    return f'<dl>{facts}</dl><div class="totals">{boxes}</div>'


def _per_task(document: dict) -> str:
    baseline = (document.get("baseline_rollouts") or {}).get("per_task", {})
    rows = []
    for task, summary in document["rollouts"]["per_task"].items():
        row = {"task": task, "rollouts": summary["episodes"], "successes": summary["successes"],
               "success": format_share(summary["success_rate"]), "95% CI": _interval(summary["success_ci"]),
               "mean length": summary["mean_length"], "failure modes": _modes(summary["failure_modes"])}
        if task in baseline:
            row.update({"baseline success": format_share(baseline[task]["success_rate"]),
                        "baseline 95% CI": _interval(baseline[task]["success_ci"])})
        rows.append(row)
    return table_section(pd.DataFrame(rows), "No rollouts.")


def _instruction_swap(document: dict) -> str:
    swap = document.get("instruction_swap")
    if swap is None:
        return empty_note("Not run (--swap-rollouts 0).")
    groups = {"(all)": swap, **swap["per_task"]}
    outcomes = ("went_to_named", "went_to_original", "neither", "succeeded_on_named")
    table = pd.DataFrame([{"task": task, "rollouts": group["rollouts"],
                           **{name.replace("_", " "): f"{group[name]['count']} ({format_share(group[name]['rate'])}, "
                                                       f"{_interval(group[name]['ci'])})" for name in outcomes}}
                          for task, group in groups.items()])
    episodes = pd.DataFrame([{"episode": row["episode"], "task": row["task"], "instruction": row["instruction"],
                              "named": row["named"], "original target": row["original"],
                              "went to": row["went_to"].removeprefix("went_to_"),
                              "succeeded": "yes" if row["success"] else "no"} for row in swap["episodes"]])
    return (f"<p>Each of the {swap['scenes_with_two_or_more_objects']} of {swap['scenes']} closed-loop scenes with two "
            "or more objects rolled out again with the instruction naming another object (its first distractor, same "
            "template and task); the environment judges success for the named object. A policy that ignores the words "
            "goes to the original target. Each cell: count (rate, 95% Wilson interval). "
            f"{escape_html(swap['rule'][0].upper() + swap['rule'][1:])}.</p>"
            + table_section(table, "No scene with two or more objects.")
            + table_section(episodes, "No scene with two or more objects."))


def _demonstrations(document: dict) -> str:
    comparison = document["rollouts"]["demonstrations"]
    groups = {"(all)": comparison["overall"], **comparison["per_task"]}
    table = pd.DataFrame([{"task": task, **{key.replace("_", " "): _optional(value) for key, value in row.items()}}
                          for task, row in groups.items()])  # headers that wrap: the table fits a 1280 px window
    dataset = comparison["dataset"]
    return (f"<p>Demonstrations: the {escape_html(dataset['split'])} split of {escape_html(dataset['name'])} "
            f"{escape_html(dataset['version'])}; ratios are policy / demonstrations. {escape_html(STEP_SMOOTHNESS)}.</p>"
            + table_section(table, "No rollouts."))


def _weak(lines: Sequence[str]) -> str:
    rule = f'<p class="note">{escape_html(WEAK_RULE[0].upper() + WEAK_RULE[1:])}.</p>'
    if not lines:
        return f'{rule}<p class="ok">No value is clearly weaker than the policy overall.</p>'
    return rule + '<ul class="flags">' + "".join(f"<li><strong>{escape_html(line)}</strong></li>" for line in lines) + "</ul>"


def _by_field(rows: Sequence[dict]) -> str:
    def flagged(row: dict) -> str:
        if row["under_sampled"] is None:
            return ""
        if not row["under_sampled"]:
            return "no"
        return f"yes: collect about {row['collect']} more" if row["collect"] is not None else "yes: absent"

    table = pd.DataFrame([{
        "field": row["field"], "value": row["value"], "rollouts": row["rollouts"], "successes": row["successes"],
        "success": format_share(row["success_rate"]), "95% CI": _interval(row["success_ci"]),
        "failure modes": _modes(row["failure_modes"]), "train episodes": _optional(row["train_episodes"]),
        "train share": "" if row["train_share"] is None else format_share(row["train_share"]),
        "under-sampled": flagged(row)} for row in rows])
    return ("<p>Rollouts per metadata value the environment drew, next to the train episodes with that value; "
            "empty train cells: the dataset does not record the field.</p>"
            + table_section(table, "The rollouts record no metadata."))


def _relative(target: str | None, html_dir: Path) -> str | None:
    """A link to `target` relative to the page's folder, URL-quoted."""
    return None if not target else quote(Path(os.path.relpath(target, html_dir)).as_posix())


def _video(saved_to: str | None) -> str | None:
    """A saved failed rollout's .mp4 beside its .npz, or the .npz where it holds the frames."""
    if saved_to is None:
        return None
    video = Path(saved_to).with_suffix(".mp4")
    return str(video) if video.exists() else saved_to


def _recording(recording: str | None, html_dir: Path) -> str:
    """A failed rollout's Rerun recording: its link and the command that opens it (from the page's folder)."""
    if not recording:
        return ""
    relative = Path(os.path.relpath(recording, html_dir)).as_posix()
    return (f'<br><a href="{escape_html(quote(relative))}">{escape_html(Path(recording).name)}</a>'
            f"<br><code>rerun {escape_html(shlex.quote(relative))}</code>")


def _failed(records: Sequence, html_dir: Path) -> str:
    failed = [record for record in records if not record.success]
    if not failed:
        return empty_note("No rollout failed.")
    rows = []
    for record in failed:
        sheet, video = _relative(record.contact_sheet, html_dir), _video(record.saved_to)
        picture = (f'<a href="{escape_html(sheet)}"><img src="{escape_html(sheet)}" alt="contact sheet" width="320"></a>'
                   if sheet else "")
        link = f'<a href="{escape_html(_relative(video, html_dir))}">{escape_html(Path(video).name)}</a>' if video else ""
        link += _recording(record.recording, html_dir)
        metadata = ", ".join(f"{key}={value}" for key, value in record.metadata.items())
        cells = [format_number(record.episode), record.task, record.instruction, record.failure_mode, format_number(record.length),
                 metadata]
        rows.append("<tr>" + "".join(f"<td>{escape_html(cell)}</td>" for cell in cells)
                    + f"<td>{picture}</td><td>{link}</td></tr>")
    head = "".join(f"<th>{name}</th>" for name in
                   ("episode", "task", "instruction", "failure mode", "steps", "metadata", "contact sheet", "rollout"))
    note = ("<p>Each <code>.rrd</code> is the rollout as a Rerun recording (frames, the policy's actions and "
            "entropies); open it with the <code>rerun</code> command shown, run in this page's folder.</p>"
            if any(record.recording for record in failed) else "")
    return f"{note}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _offline(document: dict) -> str:
    groups = {"(all)": document["overall"], **document["per_task"],
              **{name: document[name] for name in ("seen_tasks", "held_out_tasks") if name in document}}
    table = pd.DataFrame([{
        "group": name, "episodes": m["episodes"], "steps": m["steps"], "action MSE": m["mse"], "action L1": m["l1"],
        "gripper accuracy": "" if m["gripper_accuracy"] is None else format_share(m["gripper_accuracy"]),
        "token accuracy": format_share(m["action_token_accuracy"]), "smoothness": m["smoothness"],
        "recorded smoothness": m["recorded_smoothness"]} for name, m in groups.items()])
    return ("<p>Each step's action predicted from its recorded cameras and instruction, in physical units "
            "(eval.json has every figure).</p>" + table_section(table, "No offline metrics."))


def write_eval_html(path: str | Path, document: dict, join_rows: Sequence[dict], lines: Sequence[str],
                    records: Sequence) -> Path:
    """eval.html at `path`: the evaluation `document` (eval.json, with its rollouts),
    the coverage_join rows, the weak_lines and the rollout records (failed ones linked
    to their contact sheets, videos and Rerun recordings, relative to the page)."""
    path = Path(path)
    sections = [
        ("headline", "Headline", _headline(document)),
        ("tasks", "Success per task", _per_task(document)),
        ("swap", "Instruction swap", _instruction_swap(document)),
        ("demonstrations", "Demonstrations and policy", _demonstrations(document)),
        ("weak", "Weak values", _weak(lines)),
        ("fields", "Success per metadata value", _by_field(join_rows)),
        ("failed", "Failed rollouts", _failed(records, path.parent)),
        ("offline", "Offline metrics", _offline(document)),
    ]
    title = f"Evaluation of {document['checkpoint']}"
    nav = "".join(f'<a href="#{key}">{escape_html(heading)}</a>' for key, heading, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape_html(heading)}</h2>{html}</section>' for key, heading, html in sections)
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape_html(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{escape_html(title)}</h1><p class="meta">robolake evaluate</p></header>'
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
    return path
