"""Model compression: structured pruning (prune.py)."""
