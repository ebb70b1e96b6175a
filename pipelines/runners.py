"""The runner a build's Beam pipeline runs on, and the dask.distributed cluster that
Beam's DaskRunner needs.

Without --runner, robolake uses Beam's FnApiRunner (Beam's DirectRunner would first try
to download the Prism binary). `--runner=DaskRunner` (not one of Beam's named runners:
it is given its module path here) runs on the dask.distributed scheduler at
--dask_client_address; without an address robolake starts a LocalCluster of
--direct_num_workers worker processes (one thread each; default: the CPU count) for the
build and closes it afterwards; its workers keep glibc's default allocator settings
(WORKER_ENVIRON_UNSET). --dask_npartitions defaults to the cluster's worker
threads: Beam's DaskRunner keeps the partitions of the pipeline's Create (the source
files) through every GroupByKey, so they bound the parallelism of every step."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from robolake import lifeline

DEFAULT_RUNNER = "FnApiRunner"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap
# threshold at 128 KiB: every frame buffer becomes a fresh mmap, page-faulted and unmapped
# again. A first conversion ran 25% slower on one worker (benchmarks/convert.py, docs/scale.md).
WORKER_ENVIRON_UNSET = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def beam_runner(beam_args: list[str]) -> Iterator[list[str]]:
    """The Beam args to build and run a pipeline with while the block runs: the runner
    defaulted, and for the DaskRunner a cluster's address. The worker processes started
    meanwhile end with this process, even one killed outright (robolake/lifeline.py)."""
    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    with lifeline.driving():
        if runner is None:
            yield [f"--runner={DEFAULT_RUNNER}", *beam_args]
        elif runner in ("DaskRunner", DASK_RUNNER):
            with _dask(beam_args) as args:
                yield args
        else:
            yield beam_args


def _without_runner(beam_args: list[str]) -> list[str]:
    kept, args = [], iter(beam_args)
    for arg in args:
        if arg == "--runner":
            next(args, None)
        elif not arg.startswith("--runner="):
            kept.append(arg)
    return kept


def _given(beam_args: list[str], flag: str) -> bool:
    return any(arg.split("=", 1)[0] == flag for arg in beam_args)


@contextlib.contextmanager
def _dask(beam_args: list[str]) -> Iterator[list[str]]:
    from dask import config as dask_config
    import distributed
    from apache_beam.runners.dask.dask_runner import DaskOptions

    options = PipelineOptions(beam_args)
    dask = options.view_as(DaskOptions)
    args = [f"--runner={DASK_RUNNER}", *_without_runner(beam_args)]
    partitioned = dask.npartitions is not None or dask.partition_size is not None
    if dask.address or dask.scheduler_file:
        if not partitioned:
            with distributed.Client(dask.address, scheduler_file=dask.scheduler_file, set_as_default=False) as client:
                args.append(f"--dask_npartitions={max(1, sum(client.nthreads().values()))}")
        with _closing_beam_client():
            yield args
        return
    workers = options.view_as(DirectOptions).direct_num_workers if _given(beam_args, "--direct_num_workers") else 0
    workers = workers or os.cpu_count()
    with dask_config.set(WORKER_ENVIRON_UNSET), distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, _closing_beam_client():
        yield [*args, f"--dask_client_address={cluster.scheduler_address}",
               *([] if partitioned else [f"--dask_npartitions={workers}"])]


def _default_client():
    import distributed

    try:
        return distributed.default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def _closing_beam_client() -> Iterator[None]:
    """Beam's DaskRunner connects a dask Client for the run and never closes it: close
    the one the block made, before its cluster goes."""
    before = _default_client()
    try:
        yield
    finally:
        client = _default_client()
        if client is not None and client is not before:
            client.close()
