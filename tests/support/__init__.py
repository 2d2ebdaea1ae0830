"""Helpers shared by the test modules: one home for builders, clocks and condition waits."""
