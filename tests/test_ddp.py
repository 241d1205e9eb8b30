"""Multi-process training on CPUs (gloo), launched as a user launches it: `torchrun -m exsynth train`.

Tolerance for "DDP equals one process" (atol 1e-5 on parameters after 3 Adam steps at
lr 1e-4): both runs see the same global batches and the same initial weights; they differ
only in float32 summation order (the per-process batch means averaged by the all-reduce vs.
one mean over the global batch, and conv reductions over 2 vs. 4 samples), a relative gradient
error of a few 1e-7. Adam maps a gradient g to lr * m / (sqrt(v) + eps), which amplifies a
relative error only where g is near zero, and even there moves a parameter by at most lr per
step. 1e-5 is 1/30 of the 3e-4 the three steps can move a parameter at most; the runs move
their parameters by ~1e-4 (checked), and a run on other batches differs by far more (checked).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from exsynth.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

K, S = 4, 32
TRAIN = ["--size", str(S), "--num-classes", str(K), "--batch-size", "4", "--train-length", "16",
         "--log-every", "1", "--image-every", "100", "--option", "width=4", "--option", "num_up=2",
         "--option", "max_mult=2", "--option", "spade_hidden=8", "--option", "adaptor_downsample=1",
         "--option", "exemplar_label_input=true", "--disc-width", "8", "--disc-layers", "2", "--disc-scales", "1",
         "--loss", "adv=0.1", "--loss", "gan_feat=1", "--loss", "feat=0", "--loss", "perc=0", "--loss", "context=0",
         "--loss", "l1=1", "--loss", "warp=1", "--loss", "mask=1", "--supervision", "pair", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(nproc=2):
    exe = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    launcher = [exe] if Path(exe).exists() else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + ["--standalone", f"--nproc_per_node={nproc}", "-m", "exsynth", "train"]


def _single():
    return [sys.executable, "-m", "exsynth", "train"]


def _run(cmd, **kw):
    # outside the source tree: `python -m exsynth` must find the installed package, not ./exsynth
    kw.setdefault("cwd", "/")
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, **kw)


def _summary(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _weights(ck):
    p = load_checkpoint(ck)
    return {**{"G." + k: v for k, v in p["generator"].items()},
            **{"D." + k: v for k, v in p["discriminator"].items()}}


def _descendants(pid):
    """pid and every process below it (torchrun's workers may leave its process group)."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += children.get(q, [])
    return out


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def test_ddp_equals_one_process_on_the_same_global_batches(tmp_path):
    ddp = _summary(_run(_torchrun() + TRAIN + ["--steps", "3", "--out", str(tmp_path / "ddp"), "--quiet"]))
    assert ddp["world_size"] == 2 and ddp["ranks_identical"] is True  # bitwise equal weights on both ranks
    assert ddp["step"] == 3
    _summary(_run(_single() + TRAIN + ["--steps", "3", "--out", str(tmp_path / "one"), "--quiet"]))
    a, b = _weights(tmp_path / "ddp/checkpoints/latest.pt"), _weights(tmp_path / "one/checkpoints/latest.pt")
    assert _max_diff(a, b) <= 1e-5
    # teeth: training moved the weights well beyond the tolerance, and other batches land elsewhere
    _summary(_run(_single() + TRAIN + ["--steps", "1", "--out", str(tmp_path / "one1"), "--quiet"]))
    assert _max_diff(b, _weights(tmp_path / "one1/checkpoints/latest.pt")) > 2e-5
    _summary(_run(_single() + TRAIN + ["--steps", "3", "--data-seed", "1", "--out", str(tmp_path / "other"),
                                       "--quiet"]))
    assert _max_diff(b, _weights(tmp_path / "other/checkpoints/latest.pt")) > 1e-4
    # rank 0 alone wrote the run folder, and logged the global batch's losses
    lines = [json.loads(l) for l in (tmp_path / "ddp/metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3]
    one = [json.loads(l) for l in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    assert abs(lines[0]["G/l1"] - one[0]["G/l1"]) < 1e-5  # same weights, same 4 samples: same mean L1


def test_ddp_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    steps = ["--steps", "10", "--checkpoint-every", "2"]
    _summary(_run(_torchrun() + TRAIN + steps + ["--out", str(tmp_path / "straight"), "--quiet"]))
    run = tmp_path / "killed"
    p = subprocess.Popen(_torchrun() + TRAIN + steps + ["--out", str(run), "--quiet"], env=ENV, cwd="/",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, t0 = run / "metrics.jsonl", time.time()
    try:
        while time.time() - t0 < 240:  # kill once step 3 is logged
            if metrics.exists() and any(json.loads(l)["step"] >= 3 for l in metrics.read_text().splitlines() if l):
                break
            if p.poll() is not None:
                break
            time.sleep(0.01)
        for pid in _descendants(p.pid):  # SIGKILL torchrun and every worker at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        p.wait()
    time.sleep(0.5)
    assert not any(d.isdigit() and Path(f"/proc/{d}").exists() for d in map(str, _descendants(p.pid)[1:]))
    killed_at = load_checkpoint(run / "checkpoints/latest.pt")["step"]
    if killed_at >= 10:
        pytest.skip("the run finished before it could be killed (machine too fast for the tiny model)")
    assert killed_at >= 2
    resumed = _summary(_run(_torchrun() + ["--out", str(run), "--resume", "--quiet", "--threads", "1"]))
    assert resumed["step"] == 10 and resumed["ranks_identical"] is True
    a, b = _weights(tmp_path / "straight/checkpoints/latest.pt"), _weights(run / "checkpoints/latest.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # same processes, same order of operations: bitwise


def test_world_size_that_does_not_divide_the_batch_is_one_error_line(tmp_path):
    r = _run(_torchrun() + TRAIN + ["--batch-size", "3", "--steps", "1", "--out", str(tmp_path / "r")])
    assert r.returncode != 0
    ours = [l for l in r.stderr.splitlines() if l.startswith("exsynth train: error:")]
    assert len(ours) == 1 and "batch_size 3" in ours[0] and "number of processes (2)" in ours[0], r.stderr
    assert "/exsynth/" not in r.stderr.replace(str(tmp_path), "")  # no traceback through exsynth's code
    # (torchrun's own report of a failed child follows; that part is the launcher's)
    assert not (tmp_path / "r").exists()


def test_ddp_msca_attention_pretraining(tmp_path):
    """A loss on parameters outside the generator's output path (MSCA-Net's attention decoders)
    and a pre-training phase that leaves the synthesis out: both train under DDP."""
    args = ["--preset", "msca-cpu64", "--size", "32", "--num-classes", "4", "--batch-size", "2",
            "--option", "attention_decoder=true", "--option", "num_scales=3", "--option", "ks=[2,2,2]",
            "--loss", "attn=1", "--attn-pretrain-steps", "1", "--steps", "2", "--threads", "1",
            "--out", str(tmp_path / "r"), "--quiet"]
    s = _summary(_run(_torchrun() + args))
    assert s["step"] == 2 and s["ranks_identical"] is True


PLUGIN = '''
import sys
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset
from exsynth import cli
from exsynth.registry import DataSourceSpec, register_data_source


class Uneven(IterableDataset):
    """rank 0 holds 3 samples, rank 1 only 2: a finite stream sharded unevenly."""

    def __init__(self, rank):
        self.n = 3 if rank == 0 else 2

    def __iter__(self):
        g = torch.Generator().manual_seed(self.n)
        for _ in range(self.n):
            lab = F.one_hot(torch.randint(0, 4, (32, 32), generator=g), 4).permute(2, 0, 1).float()
            yield {"label": lab, "image": lab[:3] * 2 - 1}


register_data_source(DataSourceSpec(name="uneven", build=lambda root, *, rank, world_size, **kw: Uneven(rank),
                                    needs_root=False))
sys.exit(cli.main())
'''


def test_ddp_iterable_source_running_out_on_one_rank_stops_all(tmp_path):
    """A user's own launcher script registering an iterable source whose shards end at
    different steps: every process stops at the same step instead of waiting forever."""
    (tmp_path / "my_launch.py").write_text(PLUGIN)
    exe = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    launcher = [exe] if Path(exe).exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = launcher + ["--standalone", "--nproc_per_node=2", str(tmp_path / "my_launch.py"), "train",
                      "--allow-random-vgg", "--dataset", "uneven", "--data", "none", "--option", "width=4", "--option", "num_up=2",
                      "--option", "max_mult=2", "--option", "adaptor_downsample=1", "--supervision", "pseudo"] \
        + TRAIN[:2] + ["--num-classes", "4", "--batch-size", "2", "--steps", "10", "--threads", "1",
                       "--out", str(tmp_path / "r"), "--quiet"]
    s = _summary(_run(cmd))
    assert s["step"] == 2 and s["stopped"] == "data" and s["ranks_identical"] is True


@pytest.mark.parametrize("model,args", [
    ("egscit", ["--dataset", "synthetic-domains", "--size", "16", "--option", "width=4", "--option", "enc_blocks=1",
                "--option", "gen_blocks=1", "--option", "disc_layers=2", "--option", "stage1=1", "--option", "g_steps=1"]),
    ("pix2pixsc", ["--dataset", "synthetic-video", "--size", "16", "--num-classes", "4", "--option", "width=4",
                   "--option", "downsamples=2", "--option", "blocks=1", "--option", "disc_layers=2"]),
])
def test_ddp_two_domain_and_video_models(tmp_path, model, args):
    """EGSC-IT across its stage switch (stage 1's networks idle in stage 2, four discriminators)
    and pix2pixSC with its two discriminators train under DDP, every rank ending identical."""
    s = _summary(_run(_torchrun() + ["--model", model, "--batch-size", "4", "--steps", "3", "--train-length", "8",
                                     "--allow-random-vgg", "--disc-width", "4", "--threads", "1", "--quiet",
                                     "--out", str(tmp_path / "r")] + args))
    assert s["step"] == 3 and s["world_size"] == 2 and s["ranks_identical"] is True
