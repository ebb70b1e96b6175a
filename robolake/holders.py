"""Who holds a lake file (a version's lease, a reader's pin) and whether it still does.

A holder is a JSON object naming a build, the host and pid of its process, and a
heartbeat (seconds since the epoch) that the process refreshes every HEARTBEAT_S. It is
stale when its process is gone (same host) or its heartbeat is older than STALE_AFTER_S."""

from __future__ import annotations

import os
import socket
import time

HEARTBEAT_S = 10.0
STALE_AFTER_S = float(os.environ.get("ROBOLAKE_LEASE_STALE_AFTER_S", 120))


def new_holder(build: str, command: str) -> dict:
    """This process as the holder of `build`, for `command`."""
    now = time.time()
    return {"build": build, "command": command, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "heartbeat": now}


def well_formed(holder: object) -> bool:
    """A holder with the fields staleness is judged by (valid JSON may still lack them)."""
    return (isinstance(holder, dict) and isinstance(holder.get("build"), str)
            and isinstance(holder.get("host"), str) and type(holder.get("pid")) is int
            and isinstance(holder.get("heartbeat"), (int, float)) and not isinstance(holder["heartbeat"], bool))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why a holder no longer protects anything (its process is gone, or silent), or None."""
    if holder["host"] == socket.gethostname() and not _alive(holder["pid"]):
        return f"its process {holder['pid']} on {holder['host']} is gone"
    silent = (now or time.time()) - float(holder["heartbeat"])
    if silent > STALE_AFTER_S:
        return f"its heartbeat is {silent:.0f} s old (stale after {STALE_AFTER_S:.0f} s)"
    return None
