"""Quiet start-up: TensorFlow's and Beam's start-up lines kept off stderr in every robolake process.

robolake/__init__.py calls `quiet()` before any other robolake module loads, so the
`robolake` command, `python -m` entries and Beam's SDK workers are covered alike. The
settings are environment variables (a value the user set wins), so child processes
inherit them, and filters on the loggers that emit the known lines.

- TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ INFO and WARNING lines (cpu_feature_guard, ...).
- TF_ENABLE_ONEDNN_OPTS=0: TensorFlow 2.21 logs "oneDNN custom operations are on" while
  its shared libraries load, through absl before absl::InitializeLog, twice, and before
  TF_CPP_MIN_LOG_LEVEL applies; no log level hides it, only the setting it announces
  does. robolake runs no TensorFlow arithmetic (tf.data reads and parses shards, OpenCV
  decodes images, the policy is torch), so nothing it computes changes: the same build
  fingerprint and the same training batches either way.
- HF_HUB_DISABLE_PROGRESS_BARS=1: transformers' "Loading weights" bar as the report loads
  its sentence model (transformers reads huggingface_hub's setting; robolake's own progress
  is rich's, not tqdm).
- PYTHONPATH += robolake/quiet_site: its sitecustomize.py imports robolake in every Python
  process robolake starts. Beam's SDK workers (`python -m
  apache_beam.runners.worker.sdk_worker_main`) import apache_beam, and log its
  "apitools not found" warning, before any robolake code runs.
- Loggers: that warning on the root logger; the workers' "No semi_persistent_directory
  found" as the runner repeats it. In an SDK worker the root logger also gets a
  NullHandler: the harness sends its records to the runner, and without a handler the
  import-time warning would have made `logging` add a stderr one that prints every INFO
  line of the harness."""

from __future__ import annotations

import logging
import os

from robolake.errors import MACHINE_ERRORS

SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quiet_site")

ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

# logger name -> fragments of the known start-up messages it emits
NOISE = {
    "root": ("apitools not found",),  # apache_beam.io.gcp: the optional GCP client is absent (gs:// lakes only)
    "apache_beam.runners.portability.local_job_service": ("No semi_persistent_directory found",),
    # a transform's OSError of a full or read-only disk, logged with its traceback: the CLI says it in one line
    "apache_beam.runners.common": tuple(os.strerror(number) for number in MACHINE_ERRORS),
}

BEAM_WORKER_VARIABLE = "LOGGING_API_SERVICE_DESCRIPTOR"  # set by Beam's runner for each SDK worker it starts


class KnownLines(logging.Filter):
    """Drops the records whose message holds one of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def quiet() -> None:
    """Set the environment and the logger filters (robolake/__init__.py, once per process)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if SITE_DIR not in paths:  # a child inherits it
        os.environ["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *paths])
    for name, fragments in NOISE.items():
        logging.getLogger(None if name == "root" else name).addFilter(KnownLines(fragments))
    root = logging.getLogger()
    if os.environ.get(BEAM_WORKER_VARIABLE) and not root.handlers:
        root.addHandler(logging.NullHandler())
