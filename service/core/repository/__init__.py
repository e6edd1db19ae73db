"""The model repository: TF Serving's Source (sources.py) -> Loader (loaders.py) -> Manager."""

from service.core.repository.manager import ModelRepository
from service.core.routing import ModelView

__all__ = ["ModelRepository", "ModelView"]
