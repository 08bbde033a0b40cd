"""Benchmarks: kernel programming (``kernel``) and control-plane scale."""
