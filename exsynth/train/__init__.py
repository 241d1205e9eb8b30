"""Training: `TrainConfig` (+ presets), the `Trainer` loop, per-model objectives."""
from .config import PRESETS, TrainConfig, default_losses, load_config_file
from .trainer import Trainer, image_grid, make_dataset

__all__ = ["TrainConfig", "PRESETS", "default_losses", "load_config_file", "Trainer", "image_grid", "make_dataset"]
