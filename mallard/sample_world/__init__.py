"""The sample world: a subscription streaming service (Pondstream) generated from a seed."""

from mallard.sample_world.generate import WorldSpec, generate_world

__all__ = ["WorldSpec", "generate_world"]
