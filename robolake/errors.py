"""Errors a user or their machine can cause. The CLI prints them as one message, without a traceback."""

import errno
import os


class RobolakeError(Exception):
    """A problem with the user's input (spec, file, argument) and what to do about it."""


class SpecError(RobolakeError):
    """The dataset spec is invalid."""


# errno -> what to do, for the OSErrors that the machine, not robolake, causes
MACHINE_ERRORS = {
    errno.EACCES: "give this user access to it, or choose another place",
    errno.EPERM: "give this user access to it, or choose another place",
    errno.EROFS: "choose a writable place (--lake, the output), or remount it read-write",
    errno.ENOSPC: "free some space on the disk of the lake or the output (robolake gc removes the builds nothing "
                  "needs) and run again",
    errno.EDQUOT: "free some space or raise the disk quota, and run the command again",
    errno.EFBIG: "a file outgrew the file system's or the process's file size limit (ulimit -f): raise it",
}


def machine_error(exc: BaseException) -> str | None:
    """One line for an OSError that the machine caused (no permission, a read-only or
    full disk), naming the path and what to do, also when a wrapper only rewords it
    (Beam's "OSError: [Errno 28] ... [while running 'Write']"); None for any other
    exception (a bug, whose traceback should show)."""
    inner = exc.__cause__ or exc.__context__
    if not isinstance(exc, OSError) and inner is not None and str(inner) in str(exc):
        return machine_error(inner)
    if not isinstance(exc, OSError) or exc.errno not in MACHINE_ERRORS:
        return None
    paths = " -> ".join(str(path) for path in (exc.filename, exc.filename2) if path is not None)
    return f"{paths + ': ' if paths else ''}{exc.strerror or os.strerror(exc.errno)}: {MACHINE_ERRORS[exc.errno]}"
