"""Metrics (the paper's tables, AP, acceptance), evaluation of a model on records, reports."""
