"""Synthetic inputs: `nanoforge datagen TASK.yaml --n N --out FILE.jsonl`.

The task's LLM teacher writes inputs along diversity axes (plan.py), the checks drop
garbage, copies of valid/test inputs and (near-)duplicates (filters.py, embed.py), a judge
scores the rest, and the teacher labels what is kept (pipeline.py); report.py says what it
all cost. Training code may import this package; serving and the runtime never do.
"""

from nanoforge.datagen.pipeline import generate
from nanoforge.datagen.report import print_report

__all__ = ["generate", "print_report"]
