"""Task metrics, torch-free: classification (classify.py), extracted fields (fields.py),
generated text (text.py). Each runtime class scores its own kind with these."""

from nanoforge.metrics.classify import classify_metrics
from nanoforge.metrics.fields import extraction_metrics, per_field_errors
from nanoforge.metrics.text import HEADLINE, references, text_metrics

__all__ = ["HEADLINE", "classify_metrics", "extraction_metrics", "per_field_errors", "references", "text_metrics"]
