"""mulde: video anomaly detection with MULDE (multiscale log-density estimation)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mulde")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
