"""`exsynth train --dry-run`'s activation memory per sample against a measured training step.

Measured: torch.profiler's CPU allocator events over one `Trainer.train_step` on one sample
(after a warm-up step at the same step number, so the optimisers' state exists), with every
parameter dropping its gradient as soon as it is accumulated, so that the optimisers step
nothing: the peak of bytes allocated minus bytes freed during the step is the activations
and the backward's transients, without weights, gradients or optimizer state, which is what
the estimate claims to count."""
import tempfile
import warnings

import pytest
from torch.profiler import ProfilerActivity, profile

from exsynth.registry import DrawIndex
from exsynth.train import PRESETS, TrainConfig, Trainer
from exsynth.train.trainer import _collate


def allocation_peak(fn) -> int:
    """Peak of (allocated - freed) CPU bytes while fn runs, at the profiler's op granularity."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    for e in prof.events():
        if e.name == "[memory]":                       # a release (or allocation) outside any op
            events.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:                  # an op's own net allocation, when it ends
            events.append((e.time_range.end, e.self_cpu_memory_usage))
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda ev: ev[0]):
        live += nbytes
        peak = max(peak, live)
    return peak


def measured_step_activations(trainer: Trainer, step: int) -> int:
    batch = _collate([trainer.dataset[DrawIndex(0, 0)]])
    trainer.step = step
    trainer.train_step(batch)
    params = [p for net in [trainer.model, *trainer.discriminators.values()] for p in net.parameters()
              if p.requires_grad]
    hooks = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in params]
    for opt in trainer.optimizers.values():
        opt.zero_grad(set_to_none=True)
    trainer.step = step
    try:
        return allocation_peak(lambda: trainer.train_step(batch))
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("preset,overrides", [
    ("cocosnet-cpu64", {}),
    ("msca-cpu64", {}),
    # with a discriminator step: the exemplar-conditioned D on both self-supervised tasks
    ("msca-cpu64", dict(supervision="self", losses=dict(l1=10.0, feat=0.0, perc=0.0, adv=1.0, gan_feat=10.0),
                        model_options=dict(width=16, use_vgg=False, spade_hidden=32, patch_gan=True,
                                           exemplar_discriminator=True))),
])
def test_dry_run_estimate_within_30_percent_of_a_measured_step_at_64px(preset, overrides):
    cfg = PRESETS[preset]
    cfg.update(batch_size=1, train_length=4, allow_random_vgg=True, out=tempfile.mkdtemp(), **overrides)
    assert cfg["size"] == 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(TrainConfig(**cfg), quiet=True)
        estimate = trainer.dry_run()["activation_bytes_per_sample"]
        measured = measured_step_activations(trainer, 1)   # these runs have no schedule: any step is the peak
    assert abs(estimate - measured) <= 0.3 * measured, (estimate / 2 ** 20, measured / 2 ** 20)
