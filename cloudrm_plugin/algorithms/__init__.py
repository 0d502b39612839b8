"""Processing algorithms of the cloudrm provider."""

from .cloudmask import CloudMaskAlgorithm
from .remove_clouds import RemoveCloudsAlgorithm
from .remove_clouds_mt import RemoveCloudsMultiTemporalAlgorithm

ALGORITHMS = (RemoveCloudsAlgorithm, RemoveCloudsMultiTemporalAlgorithm, CloudMaskAlgorithm)

__all__ = ["ALGORITHMS", "CloudMaskAlgorithm", "RemoveCloudsAlgorithm", "RemoveCloudsMultiTemporalAlgorithm"]
