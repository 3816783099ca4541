"""Explainers shared by methods and metrics."""
