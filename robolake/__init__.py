"""robolake: robot demonstrations to versioned, audited RLDS datasets."""

__version__ = "0.1.0"
