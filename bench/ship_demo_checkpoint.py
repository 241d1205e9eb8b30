"""Copy a trained CoCosNet run checkpoint into the package as the `exsynth demo` checkpoint:
weights in float16, the training config and step kept, optimiser and discriminator state
dropped (the file must stay <= 5 MB).

    python bench/ship_demo_checkpoint.py runs/cocosnet64/checkpoints/latest.pt "exsynth train ..."
"""
import sys
from pathlib import Path

from exsynth.checkpoint import load_checkpoint, load_generator, save_checkpoint
from exsynth.demo import DEMO_CHECKPOINT

src, command = sys.argv[1], sys.argv[2]
payload = load_checkpoint(src, expect_model="cocosnet")
model, _ = load_generator(src)
save_checkpoint(DEMO_CHECKPOINT, model, half=True, step=payload["step"], train_seconds=payload["train_seconds"],
                train_config=payload["train_config"], command=command)
size = Path(DEMO_CHECKPOINT).stat().st_size
print(f"{DEMO_CHECKPOINT}: {size / 2**20:.2f} MiB, step {payload['step']}")
assert size <= 5 * 2 ** 20
