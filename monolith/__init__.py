"""monolith-tf: monolith's embedding combiners and hash-table configs on stock TF.

Importing `monolith` first checks that a supported TensorFlow is installed
(any distribution: `tensorflow`, `tensorflow-cpu` or a vendor build), so that a
missing or too old TensorFlow fails here with an actionable message instead of
deep inside a graph-building call.
"""

from monolith.version import __version__
from monolith.version import MAX_TF_VERSION
from monolith.version import MIN_TF_VERSION


def _parse_version(version: str) -> tuple:
  """Returns the leading numeric (major, minor, patch) of a version string."""
  parts = []
  for piece in version.split(".")[:3]:
    digits = ""
    for char in piece:
      if not char.isdigit():
        break
      digits += char
    parts.append(int(digits) if digits else 0)
  while len(parts) < 3:
    parts.append(0)
  return tuple(parts)


def _check_tensorflow_version() -> None:
  """Raises ImportError unless a supported TensorFlow can be imported."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "monolith-tf needs TensorFlow >= {lo}, < {hi}, and none could be "
        "imported ({err}). Install it alongside, e.g. "
        "`pip install 'monolith-tf[cpu]'` (tensorflow-cpu) or "
        "`pip install 'monolith-tf[gpu]'` (tensorflow[and-cuda]), or any "
        "TensorFlow build of your own.".format(lo=MIN_TF_VERSION,
                                               hi=MAX_TF_VERSION,
                                               err=e)) from e
  installed = getattr(tf, "__version__", "0.0.0")
  if not (_parse_version(MIN_TF_VERSION) <= _parse_version(installed) <
          _parse_version(MAX_TF_VERSION)):
    raise ImportError(
        "monolith-tf supports TensorFlow >= {lo}, < {hi}; found TensorFlow "
        "{found}. Upgrade TensorFlow, e.g. `pip install -U "
        "'tensorflow-cpu>={lo},<{hi}'`.".format(lo=MIN_TF_VERSION,
                                                hi=MAX_TF_VERSION,
                                                found=installed))


_check_tensorflow_version()

__all__ = ["__version__", "MIN_TF_VERSION", "MAX_TF_VERSION"]
