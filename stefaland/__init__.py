"""StefaLand: a land-surface foundation model toolkit."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stefaland")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
