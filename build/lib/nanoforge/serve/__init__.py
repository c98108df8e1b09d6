"""Serving: a registry of nanos behind REST, OpenAI-compatible and GraphQL APIs (see app.py)."""

from nanoforge.serve.app import create_app

__all__ = ["create_app"]
