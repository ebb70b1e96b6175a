"""Schemas every stage agrees on: rlds.py (the RLDS features of a dataset spec),
tables.py (the lake's Arrow tables), documents.py (JSON Schemas of the JSON files
robolake writes, in json/)."""
