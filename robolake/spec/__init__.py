"""Dataset spec: the YAML file in datasets/ that says how raw files become an RLDS dataset.

Loaded with `load_spec(path)`, validated with pydantic. Any problem ends in one
`SpecError` naming the file, the field and what is allowed.

- fields.py: the sections every source format shares (cameras, state, action, ...)
- sources.py: one spec class per source format, and their registry SOURCE_SPECS
- dataset.py: DatasetSpec and parse_spec
- loading.py: YAML files and `--set` overrides
"""

from robolake.spec.dataset import DatasetSpec, parse_spec
from robolake.spec.fields import DEFAULT_ACTION_NAMES, CameraSpec, SplitPolicy, TopicSpec, ValueSource
from robolake.spec.loading import apply_override, load_spec, read_yaml_mapping
from robolake.spec.sources import LANGUAGE_INSTRUCTION, SOURCE_SPECS, LakeMember

__all__ = [
    "DEFAULT_ACTION_NAMES", "LANGUAGE_INSTRUCTION", "SOURCE_SPECS", "CameraSpec", "DatasetSpec", "LakeMember",
    "SplitPolicy", "TopicSpec", "ValueSource", "apply_override", "load_spec", "parse_spec", "read_yaml_mapping",
]
