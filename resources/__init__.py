"""ConfigurableResources that hand mallard's clients to assets, chosen per MALLARD_ENV."""

from resources.lake import LakeResource, resources_for_env

__all__ = ["LakeResource", "resources_for_env"]
