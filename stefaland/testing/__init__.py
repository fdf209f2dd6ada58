"""Helpers for StefaLand's own tests and benchmarks (real servers on loopback, no mocks)."""
