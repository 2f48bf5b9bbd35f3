"""Mapping rules: a JSON document → a validated, compiled converter from source records to mParticle data.

The document format is described in the README ("Mappings"). `validate()` returns every problem with the
place it was found and `warnings()` what may lose data at mParticle; `compile_mapping()` turns a valid
document into a `Converter` whose `convert()` is called once per record on the hot path: each rule is
compiled to a small closure once, and one Python function is generated for the whole mapping that does the
common cases in line and calls those closures for the rest. Golden samples kept in the document are checked
by `check_samples()`, and `compare_outputs()` shows what an edit changes.

    values.py      missing values, field paths, types and text
    timestamps.py  times → epoch milliseconds
    specs.py       value specs and name templates → functions of the record
    conditions.py  "when" conditions
    validation.py  validate()
    batchfields.py device_info, mp_deviceid, partner_identities, ip; the data plan (context)
    risks.py       warnings()
    limits.py      mParticle's limits on what is sent, and the counters of what was cut
    events.py      event rules: custom events, screen views, commerce events
    users.py       user attributes: on_null, deletions, user_attributes_from
    codegen.py     the generated convert() of a mapping
    converter.py   compile_mapping() → Converter
    samples.py     golden samples
"""

from __future__ import annotations

from .converter import Converter, compile_mapping
from .limits import Stats
from .risks import warnings
from .samples import OutputChange, SampleResult, check_samples, compare_outputs, sample_output
from .timestamps import parse_timestamp
from .validation import MappingError, validate
from .values import MISSING, RecordError

__all__ = [
    "MISSING",
    "Converter",
    "MappingError",
    "OutputChange",
    "RecordError",
    "SampleResult",
    "Stats",
    "check_samples",
    "compare_outputs",
    "compile_mapping",
    "parse_timestamp",
    "sample_output",
    "validate",
    "warnings",
]
