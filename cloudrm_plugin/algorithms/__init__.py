"""Processing algorithms of the cloudrm provider."""

from .remove_clouds import RemoveCloudsAlgorithm

ALGORITHMS = (RemoveCloudsAlgorithm,)

__all__ = ["ALGORITHMS", "RemoveCloudsAlgorithm"]
