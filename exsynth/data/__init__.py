"""exsynth.data: datasets for exemplar-guided synthesis."""
from .synthetic import (
    SHAPES,
    TEXTURES,
    Style,
    SyntheticExemplarDataset,
    edge_map,
    ensure_classes,
    one_hot,
    render,
    sample_layout,
    sample_style,
)

__all__ = [
    "SyntheticExemplarDataset",
    "Style",
    "sample_style",
    "sample_layout",
    "ensure_classes",
    "render",
    "edge_map",
    "one_hot",
    "TEXTURES",
    "SHAPES",
]
