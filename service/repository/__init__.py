"""The model repository: which versions of each model exist, which are served, and swapping
them (TF Serving's Source -> Loader -> Manager, small).

- sources.py  where a model's versions come from: its folder or a remote backend, listed with
              a fingerprint per version; each source names its loader
- loaders.py  building a version's instances: SavedModels on their devices, or backend runners
- manager.py  `ModelRepository`: reconciles the wanted versions (version policy, settling,
              availability-preserving swaps, admin unload) and routes requests to them
- views.py    read-only snapshots of the models for status pages, metrics and admin routes
"""

from service.repository.manager import ModelRepository
from service.repository.views import ModelView, VersionView

__all__ = ["ModelRepository", "ModelView", "VersionView"]
