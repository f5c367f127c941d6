"""Frozen, noise-controllable base policies (diffusion with DDIM, flow with Euler steps)."""

from dsrl.base_policies.base import NoisePolicy, PolicyEmbeddingView
from dsrl.base_policies.diffusion import DiffusionPolicy
from dsrl.base_policies.factory import build_base_policy, load_base_policy
from dsrl.base_policies.flow import FlowPolicy
from dsrl.base_policies.normalization import Normalizer

__all__ = [
    "NoisePolicy",
    "PolicyEmbeddingView",
    "DiffusionPolicy",
    "FlowPolicy",
    "Normalizer",
    "build_base_policy",
    "load_base_policy",
]
