"""The model repository: which versions of each model exist, which are served, and swapping
them (TF Serving's Source -> Loader -> Manager, small).

- sources.py  where a model's versions come from: its folder or a remote backend, listed with
              a fingerprint per version; each source names its loader
- loaders.py  building a version's instances: SavedModels on their devices, or backend runners
- manager.py  `ModelRepository`: reconciles the wanted versions (version policy, settling,
              availability-preserving swaps, admin unload), routes requests, and shows each
              model as a read-only `ModelView`
"""

from service.core.repository.manager import ModelRepository, ModelView

__all__ = ["ModelRepository", "ModelView"]
