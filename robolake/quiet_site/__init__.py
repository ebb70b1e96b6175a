"""The folder robolake/quiet.py puts on the PYTHONPATH of the processes robolake starts."""
