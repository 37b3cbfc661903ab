"""Version of monolith-tf and the TensorFlow releases it supports.

This is the single source of truth: `setup.py` reads it without importing the
package, and `monolith/__init__.py` checks the installed TensorFlow against it.
"""

__version__ = "0.1.0"

# Oldest TensorFlow release supported (inclusive).
MIN_TF_VERSION = "2.15.0"
# First TensorFlow release no longer supported (exclusive).
MAX_TF_VERSION = "3.0.0"
