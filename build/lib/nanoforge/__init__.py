"""nanoforge: turn an expensive LLM call on a narrow task into a tiny on-device model."""

__version__ = "0.1.0"
