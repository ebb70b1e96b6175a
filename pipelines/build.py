"""`robolake convert`: build one dataset version from a spec.

Prepare (discover sources, refuse an existing version), run the Beam pipeline into
a staging folder, write TFDS metadata and the manifest, reconcile counts, publish.
Like Beam's examples, `run(argv)` takes its own flags and hands every other flag to
PipelineOptions (--runner, --direct_num_workers, Dataflow/Flink/Spark/Dask; the runner
and a Dask cluster: pipelines/runners.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import time
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import robolake
from pipelines.convert import (
    FILTER_TOTALS, GOLD_SHARDS, QUARANTINE, SILVER_SHARDS, SOURCES, STATISTICS, TIMINGS, BuildContext, SourceFile,
    build_pipeline,
)
from pipelines import raw_manifest
from pipelines.beam_options import beam_flags
from pipelines.runners import beam_runner
from pipelines.episode import QuarantineRecord
from pipelines.rlds_writer import write_dataset_info
from pipelines.sources import SourceReader, source_reader
from robolake import hf_hub, progress, provenance
from robolake.episode_quality import position_columns
from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.lake import Build, GoldVersion, Lake, new_build_id
from robolake.lease import Lease
from robolake.publish import build_state, commit, mark_rejected, refuse_existing, remove_abandoned_builds, start_build
from robolake.spec import DatasetSpec, load_spec, parse_spec
from robolake.storage import delete_tree, join, read_json, write_bytes, write_json, write_table
from schemas.documents import check
from schemas.rlds import RESOLUTION_CHANGE, RLDS_SCHEMA_VERSION, TRUNCATED, rlds_features
from schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA_VERSION

MANIFEST_SCHEMA_VERSION = "1.0.0"
STAGES = ("plan", "hash", "ingest", "curate", "write_rlds")  # the pipeline's steps, as they report their seconds


def code_version() -> str:
    return f"robolake-{robolake.__version__}/silver-{SILVER_SCHEMA_VERSION}/rlds-{RLDS_SCHEMA_VERSION}"


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (a literal path's parent folder)."""
    head = pattern.rstrip("/").split("*")[0].split("?")[0].split("[")[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def discover_sources(spec: DatasetSpec, reader: SourceReader, known: dict[str, dict]) -> list[SourceFile]:
    """Source files (or bag folders) with episode-id prefixes (the path under the glob's
    base, no extension) and, from `known` (the raw manifest), hashes still valid. Size
    and mtime cover the companion files too, so editing a bag's sidecar rehashes it."""
    found: dict[str, SourceFile] = {}
    for pattern in spec.source.paths:
        matches = reader.find(pattern)
        if not matches:
            raise RobolakeError(f"source.paths: no input matches {pattern!r} (relative to the working directory)")
        base = _glob_base(pattern)
        remote = hf_hub.parse(pattern)
        for path, size, mtime in sorted(matches):
            if remote:  # a Hub dataset's files: ids as its local folder of the same name would give
                relative = hf_hub.path_in_dataset(remote, path)
            else:
                relative = posixpath.relpath(path, base) if base else path.lstrip("/")
            if relative in (".", ".."):  # the pattern is the input itself (e.g. "."): its own name
                relative = posixpath.basename(posixpath.abspath(path))
            stem, suffix = posixpath.splitext(relative)
            # a bag folder keeps its name, and so does a TFDS shard (its ".tfrecord-00000-of-00004" numbers it)
            relative_id = relative if os.path.isdir(path) or not suffix[1:].isalnum() else stem
            if relative_id in found and found[relative_id].path != path:
                raise RobolakeError(
                    f"source.paths: {found[relative_id].path} and {path} give the same episode id prefix "
                    f"{relative_id!r}; list them under one glob"
                )
            companions = reader.companions(path)
            for companion in FileSystems.match(list(companions)) if companions else []:
                size += companion.metadata_list[0].size_in_bytes
                mtime = max(mtime, companion.metadata_list[0].last_updated_in_seconds)
            sha256 = raw_manifest.known_sha256(known.get(path), size, mtime)
            found[relative_id] = SourceFile(path, relative_id, size, mtime, sha256, companions)
    return sorted(found.values(), key=lambda s: s.relative_id)


def _unreadable(reader: SourceReader, source: SourceFile) -> str:
    """Why a source tells no state width: its first quarantine reason when planned."""
    for item in reader.plan(source.path, source.relative_id, source.known_sha256 or ""):
        if isinstance(item, QuarantineRecord):
            return " ".join(item.reason.removeprefix(f"{source.path}: ").split())
    return "no episode holds the state"


def infer_state_dim(reader: SourceReader, sources: list[SourceFile], shown: int = 3) -> int:
    """The state width from the first source that tells it; if none does, an error
    naming the first `shown` sources and why each could not be read."""
    for source in sources:
        width = reader.state_width(source.path)
        if width is not None:
            return width
    problems = "; ".join(f"{posixpath.basename(s.path)}: {_unreadable(reader, s)}" for s in sources[:shown])
    more = f"; and {len(sources) - shown} more" if len(sources) > shown else ""
    files = f"{len(sources)} file{'s' if len(sources) > 1 else ''}"
    raise RobolakeError(f"{reader.state_source()}: no source could be read ({files}): {problems}{more}")


def fingerprint(spec: DatasetSpec, sources: list[dict]) -> str:
    """Content fingerprint over the inputs' sha256, the spec and the code version."""
    content = {
        "inputs": sorted((s["relative_id"], s["sha256"]) for s in sources),
        "spec": spec.fingerprint(),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class BuildOutcome:
    """What a build produced, as the manifest and the closing summary report it."""

    gold_dir: str
    manifest: dict

    def summary_line(self) -> str:
        m = self.manifest
        c = m["counts"]
        splits = ", ".join(f"{s} {v['episodes']}" for s, v in sorted(c["by_split"].items()))
        seconds = m["timings"]["total_s"]
        shares = m["saturation"]["action"]
        worst = max(shares, key=shares.get) if shares else None
        saturation = f"at most {shares[worst]:.1%} ({worst})" if worst else "none normalized"
        stages = ", ".join(f"{stage} {s:.1f}" for stage, s in m["timings"]["stages_s"].items())
        return (
            f"{m['dataset']} {m['version']}: {c['episodes_written']} episodes written ({splits}), "
            f"{c['episodes_quarantined']} quarantined, {c['episodes_truncated']} truncated (no terminal state), "
            f"{c['steps_written']} steps, "
            f"{m['filter']['items_clipped']} action values clipped, {m['filter']['steps_dropped']} steps dropped, "
            f"{m['saturation']['mode']} train actions at +-1: {saturation}, "
            f"{c['bytes_written'] / 1e6:.1f} MB in {seconds:.1f} s "
            f"({c['steps_written'] / seconds:.0f} steps/s, {c['bytes_written'] / 1e6 / seconds:.1f} MB/s; "
            f"seconds of work per stage: {stages}) -> {self.gold_dir}"
        )


def split_totals(shards: list[dict]) -> dict[str, dict]:
    """Episodes, steps and shards per split from the gold shards' records."""
    by_split: dict[str, dict] = {}
    for shard in shards:
        entry = by_split.setdefault(shard["split"], {"episodes": 0, "steps": 0, "shards": 0})
        entry["episodes"] += shard["episodes"]
        entry["steps"] += shard["steps"]
        entry["shards"] += 1
    return by_split


def _reconcile(sources: list[dict], silver: list[dict], gold: list[dict], quarantine: list[dict], filtered: dict) -> dict:
    """Every episode found is written or quarantined: planning, ingest and filtering together."""
    seen = sum(s["episodes"] + s["quarantined"] for s in sources)
    ingested = sum(s["episodes"] for s in silver)
    written = sum(g["episodes"] for g in gold)
    if written + len(quarantine) != seen:
        raise RuntimeError(f"accounting mismatch: {seen} episodes found, {written} written + {len(quarantine)} quarantined")
    if ingested - filtered["episodes_quarantined"] != written:
        raise RuntimeError(
            f"accounting mismatch: {ingested} episodes in silver, {filtered['episodes_quarantined']} quarantined "
            f"by the action filter, {written} in gold"
        )
    by_split = split_totals(gold)
    flagged: Counter = Counter()
    for shard in gold:
        flagged.update(shard["flagged"])
    return {
        "source_files": len(sources),
        "episodes_found": seen,
        "episodes_ingested": ingested,
        "episodes_written": written,
        "episodes_quarantined": len(quarantine),
        "episodes_truncated": flagged[TRUNCATED],
        "episodes_resolution_changed": flagged[RESOLUTION_CHANGE],
        "steps_written": sum(g["steps"] for g in gold),
        "bytes_written": sum(g["bytes"] for g in gold),
        "by_split": {k: v for k, v in by_split.items() if v["episodes"]},
    }


def convert(
    spec: DatasetSpec, lake: Lake, beam_args: list[str], overwrite: bool = False, rehash: bool = False,
    command: str = "convert",
) -> BuildOutcome:
    """Build `spec`'s version into the lake; raises RobolakeError on bad input. The
    build holds the version's lease from before planning to after publication, and
    nothing is published unless the whole build succeeds."""
    started, started_at = time.time(), provenance.utc_now()
    lease = Lease(lake, spec.name, spec.version, new_build_id(), command)
    with lease:
        refuse_existing(lake, spec.name, spec.version, overwrite)
        for abandoned in remove_abandoned_builds(lake):
            progress.console.print(f"removed the folder of a killed build: {abandoned}")
        build = start_build(lake, lease)
        try:
            manifest, statistics = _build(spec, lake, build, beam_args, rehash, started, started_at, command)
        except RobolakeError as exc:
            if build_state(build) != "rejected":
                delete_tree(build.dir)
            raise exc from None
        except BaseException:
            delete_tree(build.dir)
            raise
        commit(lake, build, lease, manifest)
    raw_manifest.register(
        lake,
        [{k: s[k] for k in ("path", "sha256", "bytes", "mtime")} | {"format": spec.source.format} for s in manifest["sources"]],
    )
    reports = lake.reports(spec.name, spec.version)
    write_json(join(reports, "convert.json"), _metrics(manifest))
    write_bytes(join(reports, "action_histogram.csv"), _histogram_csv(statistics["robolake"]["action_histogram"]))
    return BuildOutcome(build.gold, manifest)


def _build(spec: DatasetSpec, lake: Lake, build: Build, beam_args: list[str], rehash: bool, started: float,
           started_at: str, command: str) -> tuple[dict, dict]:
    """Plan and run the pipeline into the build's folder; write its metadata and manifest."""
    reader = source_reader(spec)
    sources = discover_sources(spec, reader, {} if rehash else raw_manifest.registered(lake))
    state_dim = infer_state_dim(reader, sources)
    layout = reader.state_layout(sources[0].path, state_dim)
    ctx = BuildContext(spec, reader, state_dim, build.dir, position_columns(layout))
    with beam_runner(beam_args) as beam_args:  # the runner defaulted; a Dask cluster up while the pipeline runs
        try:
            pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
        except ValueError as exc:  # e.g. an unknown --runner
            raise RobolakeError(f"Beam pipeline options {beam_args}: {exc}") from None
        with progress.ProgressBar(ctx.progress_dir, f"{command} {spec.name} {spec.version}"):
            with pipeline:
                build_pipeline(pipeline, ctx, sources)
    summary = read_json(ctx.summary_path)
    filtered = summary[FILTER_TOTALS][0]["totals"]
    counts = _reconcile(summary[SOURCES], summary[SILVER_SHARDS], summary[GOLD_SHARDS], summary[QUARANTINE], filtered)
    write_table(
        build.quarantine_table,
        pa.Table.from_pylist(sorted(summary[QUARANTINE], key=lambda q: q["episode_id"]), schema=QUARANTINE_SCHEMA),
    )
    if not counts["episodes_written"]:
        first = summary[QUARANTINE][0]
        mark_rejected(build, f"every episode was quarantined, first: {first['episode_id']}: {first['reason']}")
        raise RobolakeError(
            f"{spec.name} {spec.version}: every episode was quarantined, nothing published; "
            f"reasons in {build.quarantine_table}, first: {first['episode_id']}: {first['reason']}"
        )
    statistics = summary[STATISTICS][0]["document"]
    statistics_sha256 = _write_statistics(ctx, statistics, filtered)
    manifest = _write_gold_metadata(ctx, summary, counts, beam_args, time.time() - started, layout)
    manifest.update(reader.manifest_extras())
    manifest["build"] = build.id
    manifest["statistics_sha256"] = statistics_sha256
    manifest["saturation"] = _saturation(statistics)
    manifest["filter"] = filtered
    manifest["timings"]["total_s"] = round(time.time() - started, 3)
    write_json(join(build.gold, "provenance.json"), _dataset_provenance(build, manifest, started_at))
    write_json(GoldVersion.at(build.gold).manifest_path, manifest)
    delete_tree(ctx.summary_path)
    delete_tree(ctx.progress_dir)
    return manifest, statistics


def _dataset_provenance(build: Build, manifest: dict, started_at: str) -> dict:
    """provenance.json of a gold version: its raw inputs and everything upstream of them."""
    document = provenance.collect(
        artifact={"kind": "dataset", "path": build.gold},
        dataset={
            "name": manifest["dataset"],
            "version": manifest["version"],
            "build": build.id,
            "fingerprint": manifest["fingerprint"],
            "gold_dir": build.gold,
            "statistics_sha256": manifest["statistics_sha256"],
        },
        inputs=[
            {"path": s["path"], "sha256": s["sha256"], "bytes": s["bytes"], "episodes": s["episodes"]}
            | ({"companions": s["companions"]} if s["companions"] else {})
            for s in manifest["sources"]
        ],
        started_at=started_at,
    )
    if "remote_datasets" in manifest:  # Hub references, each with the commit it resolved to
        document["remote_datasets"] = manifest["remote_datasets"]
    if "members" in manifest:  # built from gold versions: lineage goes on through each of them
        document["members"] = [{k: m[k] for k in ("dataset", "version", "gold_dir", "fingerprint", "statistics_sha256",
                                                  "trim") if k in m}
                               for m in manifest["members"]]
    check(document, "provenance", "provenance.json")
    return document


def _write_statistics(ctx: BuildContext, document: dict, filtered: dict) -> str:
    """dataset_statistics.json into the staged gold version; returns its sha256."""
    if not document["num_transitions"]:
        raise RobolakeError(
            f"{ctx.spec.name} {ctx.spec.version}: no train episodes left to compute statistics from "
            f"(statistics come from the train split only); check splits.fractions and the quarantine"
        )
    document["robolake"]["filter"]["summary"] = filtered
    check(document, "dataset_statistics", "dataset_statistics.json")
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    write_bytes(GoldVersion.at(ctx.gold_dir).statistics_path, data)
    return hashlib.sha256(data).hexdigest()


def _saturation(statistics: dict) -> dict:
    """Under the version's own mode, the share of train values at the +-1 bound per
    normalized dimension (action: unmasked ones; state: when normalized)."""
    settings = statistics["robolake"]["normalization"]
    shares = statistics["robolake"]["saturation"]
    mode = settings["mode"]
    action = {name: share for name, share, normalized in
              zip(statistics["robolake"]["action_names"], shares["action"][mode], settings["mask"]) if normalized}
    state = {f"state[{i}]": share for i, share in enumerate(shares["proprio"][mode])} if settings["state"] else {}
    return {"mode": mode, "action": action, "state": state}


def _histogram_csv(histogram: dict) -> bytes:
    """The normalized action histogram as a DVC plot: one row per bin, one column per dimension."""
    edges, counts = histogram["edges"], histogram["counts"]
    lines = [",".join(["normalized_action", *counts])]
    for i in range(len(edges) - 1):
        center = (edges[i] + edges[i + 1]) / 2
        lines.append(",".join([f"{center:.4f}", *(str(column[i]) for column in counts.values())]))
    return ("\n".join(lines) + "\n").encode()


def _metrics(manifest: dict) -> dict:
    """The build's figures as DVC metrics (lake/reports/<dataset>/<version>/convert.json)."""
    counts, seconds = manifest["counts"], manifest["timings"]["total_s"]
    return {
        "episodes_found": counts["episodes_found"],
        "episodes_written": counts["episodes_written"],
        "episodes_quarantined": counts["episodes_quarantined"],
        "episodes_truncated": counts["episodes_truncated"],
        "episodes_resolution_changed": counts["episodes_resolution_changed"],
        "steps_written": counts["steps_written"],
        "megabytes_written": round(counts["bytes_written"] / 1e6, 3),
        "episodes_by_split": {split: v["episodes"] for split, v in counts["by_split"].items()},
        "quarantined_by_reason": manifest["quarantine_reasons"],
        "dropped_ticks": manifest["alignment"]["dropped_ticks"],
        "filter": manifest["filter"],
        "saturation": manifest["saturation"],
        "seconds": seconds,
        "steps_per_second": round(counts["steps_written"] / seconds, 1),
        "stage_seconds": manifest["timings"]["stages_s"],
    }


def _dropped_ticks(shards: list[dict]) -> dict[str, int]:
    """Control ticks dropped as stale in alignment, by stream, over the written episodes."""
    total: Counter = Counter()
    for shard in shards:
        total.update(shard["dropped_ticks"])
    return dict(sorted(total.items()))


def stage_seconds(timings: list[dict]) -> dict[str, float]:
    """Seconds of work per stage, summed over files, shards and workers (hashing runs
    beside ingest, so the stages add up to more than the wall time)."""
    totals = dict.fromkeys(STAGES, 0.0)
    for timing in timings:
        totals[timing["stage"]] += timing["seconds"]
    return {stage: round(seconds, 3) for stage, seconds in totals.items()}


def _write_gold_metadata(ctx: BuildContext, summary: dict, counts: dict, beam_args: list[str], pipeline_s: float,
                         layout: list[dict] | None) -> dict:
    """Write TFDS metadata for the staged shards; return the manifest."""
    spec = ctx.spec
    shard_lengths: dict[str, list[int]] = {}
    split_bytes: Counter = Counter()
    for g in sorted(summary[GOLD_SHARDS], key=lambda g: (g["split"], g["index"])):
        shard_lengths.setdefault(g["split"], []).append(g["episodes"])
        split_bytes[g["split"]] += g["bytes"]
    write_dataset_info(ctx.gold_dir, spec, rlds_features(spec, ctx.state_dim), shard_lengths, split_bytes)
    sources = sorted(summary[SOURCES], key=lambda s: s["relative_id"])
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "dataset": spec.name,
        "version": spec.version,
        "fingerprint": fingerprint(spec, sources),
        "code_version": code_version(),
        "spec_sha256": spec.fingerprint(),
        "spec": spec.model_dump(mode="json"),
        "state_dim": ctx.state_dim,
        "state_layout": layout,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": counts,
        "quarantine_reasons": dict(sorted(Counter(q["reason_code"] for q in summary[QUARANTINE]).items())),
        "alignment": {"dropped_ticks": _dropped_ticks(summary[SILVER_SHARDS])},
        "sources": sources,
        "beam_options": beam_args,
        "timings": {"pipeline_s": round(pipeline_s, 3), "stages_s": stage_seconds(summary[TIMINGS])},
    }


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(
        prog="robolake convert",
        description="Convert raw demonstrations into a versioned RLDS dataset. "
        "Flags not listed here go to Apache Beam (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("spec", help="dataset spec YAML, e.g. datasets/sample_tabletop.yaml")
    parser.add_argument("--lake", default="lake", help="lake root: a folder, gs://... or s3://... (default: lake)")
    parser.add_argument("--version", help="dataset version to build (default: the spec's)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one spec field (dotted path, YAML value), e.g. --set splits.fractions.train=0.7; repeatable",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--rehash", action="store_true", help="hash every source file again, even if registered unchanged in lake/raw"
    )
    args, leftovers = parser.parse_known_args(argv)
    return args, beam_flags(parser, leftovers)


def run(argv: list[str]) -> BuildOutcome:
    args, beam_args = parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    if args.version:  # taken as a string, not YAML (1.10 stays "1.10")
        spec = parse_spec({**spec.model_dump(mode="json"), "version": args.version}, origin="--version")
    outcome = convert(spec, Lake(args.lake), beam_args, overwrite=args.overwrite, rehash=args.rehash)
    reasons = outcome.manifest["quarantine_reasons"]
    if reasons:
        progress.console.print(f"quarantined by reason: {reasons} (see {Lake(args.lake).quarantine(spec.name, spec.version)})")
    overridden = f"; overridden by --set: {' '.join(args.overrides)}" if args.overrides else ""
    print(outcome.summary_line() + overridden)
    return outcome
