"""Analyses over the IR: shape inference, constraints, summary and cost."""
