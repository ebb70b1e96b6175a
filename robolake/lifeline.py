"""The processes a pipeline's driver starts end when the driver does, however it ends.

Beam's FnApiRunner in multi_processing mode starts each SDK worker as `sh -c "python -m
apache_beam.runners.worker.sdk_worker_main"` and stops it when the pipeline ends. A driver
killed outright (kill -9, the OOM killer) never does, and its workers (children of the
shell, not of the driver) live on, a few hundred MB each. So the driver names itself in
DRIVER_VARIABLE while it runs a pipeline (`driving`); every process it starts meanwhile
inherits the variable, and robolake's sitecustomize (quiet_site/, first on their
PYTHONPATH) calls `follow_driver` in each Python one: a daemon thread waits on the
driver's pidfd and ends the process as soon as the driver has ended.

Linux only (os.pidfd_open: Python 3.9, kernel 5.3); elsewhere, or on an older kernel,
`follow_driver` does nothing and workers end as Beam ends them."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterator

DRIVER_VARIABLE = "ROBOLAKE_PIPELINE_DRIVER"  # the pid of the process running the pipeline
ORPHAN_EXIT_CODE = 70  # a process that ended because its driver had


@contextlib.contextmanager
def driving() -> Iterator[None]:
    """While the block runs, the processes this one starts end when it does."""
    before = os.environ.get(DRIVER_VARIABLE)
    os.environ[DRIVER_VARIABLE] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DRIVER_VARIABLE, None)
        else:
            os.environ[DRIVER_VARIABLE] = before


def follow_driver() -> None:
    """End this process when the driver that started it ends (no-op outside a driver's
    children, and where pidfds are not available)."""
    driver = os.environ.get(DRIVER_VARIABLE, "")
    if not driver.isdigit() or int(driver) == os.getpid() or not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(int(driver))
    except ProcessLookupError:  # the driver is gone already
        os._exit(ORPHAN_EXIT_CODE)
    except OSError:  # a kernel without pidfd_open
        return
    threading.Thread(target=_exit_with, args=(pidfd,), name="robolake-follow-driver", daemon=True).start()


def _exit_with(pidfd: int) -> None:
    """Block until the process behind `pidfd` has ended (its pidfd turns readable), then end this one."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.poll()
    os._exit(ORPHAN_EXIT_CODE)
