"""Distillation: losses and trainers."""
