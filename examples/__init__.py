"""Example transforms and the demo."""
