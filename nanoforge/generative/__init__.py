"""Generative nanos: translate, summarize (and extract with a decoder) on causal students."""
