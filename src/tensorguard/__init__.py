"""tensorguard: tell where a large language model comes from by reading only its weight files."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tensorguard")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
