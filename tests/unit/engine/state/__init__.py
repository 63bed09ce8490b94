"""Tests of the built-in tables."""
