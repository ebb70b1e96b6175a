"""Run by Python at start-up in every process robolake starts (robolake/quiet.py puts this
folder first on their PYTHONPATH): importing robolake quiets the process before anything
else loads, as Beam's SDK workers import apache_beam before any robolake code; a process
started by a pipeline's driver ends when the driver does (robolake/lifeline.py). Then the
sitecustomize this one shadows, if there is one, runs as it would have."""

import importlib.machinery
import importlib.util
import os
import sys

import robolake  # noqa: F401  (robolake/__init__.py runs robolake.quiet.quiet())
from robolake.lifeline import follow_driver

follow_driver()

_HERE = os.path.dirname(os.path.abspath(__file__))
_shadowed = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [path for path in sys.path if os.path.abspath(path or os.curdir) != _HERE])
if _shadowed is not None:
    sys.modules[__name__] = importlib.util.module_from_spec(_shadowed)
    _shadowed.loader.exec_module(sys.modules[__name__])
