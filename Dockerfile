# robolake's worker image: the pinned stack of requirements.lock and robolake itself, for
# Beam workers that run robolake's pipeline (docs/scale.md):
#   Dataflow      --sdk_container_image=IMAGE --experiments=use_runner_v2
#   Flink, Spark  --environment_type=DOCKER --environment_config=IMAGE
#   Dask          the scheduler's and workers' image (run `dask scheduler` / `dask worker ADDRESS`
#                 instead of the entrypoint: dask-kubernetes and dask-jobqueue set the command)
#
#   docker build -t registry.example.com/robolake-worker:0.1.0 . && docker push registry.example.com/robolake-worker:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=2

# torch first, the CPU wheel (an unpinned torch pulls GBs of CUDA packages)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/robolake
COPY pyproject.toml requirements.lock README.md ./
COPY robolake robolake
COPY schemas schemas
COPY pipelines pipelines
COPY validation validation
COPY training training
COPY exports exports
COPY cli cli
RUN pip install -c requirements.lock . && rm -rf build *.egg-info

# Dask workers started from this image keep glibc's allocator defaults: Dask's nannies would
# set MALLOC_TRIM_THRESHOLD_=65536, which made a first conversion 25% slower (docs/scale.md)
RUN mkdir -p /etc/dask && printf 'distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n' \
    > /etc/dask/distributed.yaml

# Beam's SDK harness boot program, which portable runners (Dataflow runner v2, Flink, Spark) start
COPY --from=apache/beam_python3.11_sdk:2.77.0 /opt/apache/beam /opt/apache/beam
WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]
