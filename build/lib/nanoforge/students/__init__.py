"""Student models: encoder.py (classifier), causal.py (decoder LMs, later)."""
