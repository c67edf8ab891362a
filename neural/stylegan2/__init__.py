"""StyleGAN2 generator: architecture config, ops, modules and the NVIDIA state-dict layout."""

from .config import (
    GeneratorConfigError,
    StyleGAN2Config,
    check_state_shapes,
    expected_state_shapes,
)

__all__ = [
    "GeneratorConfigError",
    "StyleGAN2Config",
    "check_state_shapes",
    "expected_state_shapes",
]
