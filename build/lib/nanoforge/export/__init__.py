"""Exports of trained students, each checked against the torch model (parity.py)."""
