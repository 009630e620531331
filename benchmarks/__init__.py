"""Benchmark harness: delta_platform against the extractors a data engineer would pick instead."""
