"""Mapping rules: a JSON document → a validated, compiled converter from source records to mParticle data.

The document format is described in the README ("Mappings"). `validate()` returns every problem with the
place it was found and `warnings()` what may lose data at mParticle; `compile_mapping()` turns a valid
document into a `Converter` whose `convert()` is called once per record on the hot path, so each rule is
compiled to a small closure once. Golden samples kept in the document are checked by `check_samples()`, and
`compare_outputs()` shows what an edit changes.

    values.py      field paths, value specs, types, text, timestamps, templates
    conditions.py  "when" conditions
    validation.py  validate() and warnings()
    converter.py   compile_mapping() → Converter, mParticle's limits on values
    samples.py     golden samples
"""

from __future__ import annotations

from .converter import Converter, Stats, compile_mapping
from .samples import OutputChange, SampleResult, check_samples, compare_outputs, sample_output
from .validation import MappingError, validate, warnings
from .values import MISSING, RecordError, parse_timestamp

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
