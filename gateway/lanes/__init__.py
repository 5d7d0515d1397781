"""Lanes: classification, admission, budgets and the per-lane gate."""
