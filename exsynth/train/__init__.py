"""Training: `TrainConfig` (+ presets from the model registry), the `Trainer` loop (one process
or torchrun DDP). Each model's objective lives in its model file."""
from .config import PRESETS, TrainConfig, default_losses, field_docs, load_config_file
from .trainer import Trainer, image_grid, make_dataset

__all__ = ["TrainConfig", "PRESETS", "default_losses", "field_docs", "load_config_file", "Trainer", "image_grid",
           "make_dataset"]
