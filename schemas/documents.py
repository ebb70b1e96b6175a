"""JSON Schemas of the JSON files robolake writes beside its artifacts (schemas/json/)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

SCHEMA_DIR = Path(__file__).parent / "json"


@cache
def schema(name: str) -> dict:
    """The JSON Schema `schemas/json/<name>.schema.json`."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def check(document: object, name: str, where: str) -> None:
    """Raise ValueError naming `where` and the failing field if `document` breaks schema `name`."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema(name)).iter_errors(document))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"{where}: not a valid {name} document: {field}: {error.message}")
