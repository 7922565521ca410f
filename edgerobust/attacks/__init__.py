"""Adversarial attacks that run against plain numpy callables (no torch or foolbox needed)."""
