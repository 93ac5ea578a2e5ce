"""Throughput benchmarks (`make bench`); a package so tests can import the measuring code."""
