"""Extraction's contract: a flat JSON Schema of fields (schema.py), reading written values
into typed ones (values.py) and aligning a teacher's values to spans of the text (align.py).

Pure Python (no torch): task specs, teachers, the runtime and training all use it.
"""
