"""Runnable examples of monolith-tf (`python -m <module>`)."""
