"""Extraction tasks: a flat JSON Schema of fields, filled by a span tagger over the input text.

Pure Python (no torch): shared by training (labels from `align`) and the runtime (decoding
through `normalise_value`).
"""

from nanoforge.extract.align import METHODS, Span, align, align_record
from nanoforge.extract.schema import (
    FIELD_TYPES,
    Field,
    Schema,
    coerce_output,
    normalise_text,
    normalise_value,
    parse_date,
    parse_number,
    parse_or_error,
    validate,
    values_equal,
)

__all__ = [
    "FIELD_TYPES",
    "METHODS",
    "Field",
    "Schema",
    "Span",
    "align",
    "align_record",
    "coerce_output",
    "normalise_text",
    "normalise_value",
    "parse_date",
    "parse_number",
    "parse_or_error",
    "validate",
    "values_equal",
]
