"""Baseline servers the project is measured against, in the same run."""
