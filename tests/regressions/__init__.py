"""Regression tests: one file per bug, named after it."""
