"""Video data: the PyAV writer, the DALI `--dataset video` source and its PyAV twin, the CLI.

Small on purpose (32 px clips of 16 frames, a handful of clips): CI installs the [video] extra
and runs every test here on the CPU.
"""
import json
import shutil
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")  # CI installs exsynth[video]; these run there

from exsynth import cli
from exsynth.data.synthetic_video import synthetic_clip
from exsynth.video.writer import write_clip, write_synthetic_videos

S, K, FRAMES, WINDOW = 32, 4, 16, 4
SPEED = 3.0  # fast shapes: every frame of a clip differs clearly from its neighbours


def _make_set(root, clips=3, codec="vp9", frames=FRAMES, seed=0):
    write_synthetic_videos(root, clips=clips, frames=frames, size=S, num_classes=K, seed=seed, codec=codec,
                           speed=SPEED)
    return root


@pytest.fixture(scope="module")
def clipset(tmp_path_factory):
    return _make_set(tmp_path_factory.mktemp("video") / "set")


def _dali(root, **kw):
    from exsynth.video.dali_reader import DaliVideoPairs
    kw.setdefault("batch_size", 2)
    kw.setdefault("threads", 1)
    return DaliVideoPairs(root, size=S, num_classes=K, window=WINDOW, **kw)


def _pyav(root, **kw):
    from exsynth.video.pyav_reader import PyAVVideoPairs
    return PyAVVideoPairs(root, size=S, num_classes=K, window=WINDOW, **kw)


# ---- writer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec,ext", [("vp9", ".webm"), ("mjpeg", ".avi"), ("mjpeg", ".mkv")])
def test_writer_round_trip(tmp_path, codec, ext):
    rng = np.random.default_rng(0)
    # smooth frames (a moving gradient): lossy codecs keep them close
    yy, xx = np.mgrid[0:32, 0:48]
    frames = np.stack([np.stack([(xx * 5 + 8 * t) % 256, yy * 7, np.full_like(xx, 40 * (t % 5))], -1)
                       for t in range(40)]).astype(np.uint8)
    path = write_clip(tmp_path / f"c{ext}", frames, fps=10, codec=codec, keyframe_interval=15)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [p for p in c.demux(s) if p.size]
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        c.seek(0)
        decoded = list(c.decode(s))
    assert len(packets) == len(decoded) == 40
    assert [round(f.time, 6) for f in decoded] == [round(i / 10, 6) for i in range(40)]  # pts = i / fps
    assert keys[0] == 0 and max(np.diff(keys + [40])) <= 15
    rgb = np.stack([f.to_ndarray(format="rgb24") for f in decoded]).astype(float)
    assert rgb.shape == frames.shape and np.abs(rgb - frames).mean() < 12
    with pytest.raises(ValueError, match="keyframe_interval"):
        write_clip(tmp_path / "x.webm", frames, keyframe_interval=30)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        write_clip(tmp_path / "x.webm", frames.astype(np.float32))
    with pytest.raises(ValueError, match="goes in one of"):
        write_clip(tmp_path / "x.avi", frames, codec="vp9")


def test_synthetic_set_labels_are_exact(clipset):
    from exsynth.imageio import read_label
    lab = read_label(clipset / "labels" / "clip_0001" / "000007.png", K)
    assert torch.equal(lab, torch.from_numpy(synthetic_clip(0, "train", 1, S, K, speed=SPEED).layout(7)))
    assert sorted(p.name for p in (clipset / "videos").iterdir()) == [f"clip_000{i}.webm" for i in range(3)]


# ---- the readers ----------------------------------------------------------------------------------

KEYS = {"label": ((K, S, S), torch.float32), "label_index": ((S, S), torch.int64),
        "image": ((3, S, S), torch.float32), "photo": ((3, S, S), torch.float32),
        "exemplar": ((3, S, S), torch.float32), "exemplar_label": ((K, S, S), torch.float32),
        "consistent": ((3, S, S), torch.float32), "consistent_label": ((K, S, S), torch.float32),
        "inconsistent": ((3, S, S), torch.float32), "inconsistent_label": ((K, S, S), torch.float32),
        "same_style": ((), torch.float32)}


def _identify(frame, rendered):
    """(clip, t) of the rendered frame closest to a decoded one."""
    err = ((rendered - frame) ** 2).mean(dim=(2, 3, 4))
    i = int(err.argmin())
    return divmod(i, rendered.shape[1])


@pytest.mark.parametrize("make", [_dali, _pyav], ids=["dali", "pyav"])
def test_samples_keys_and_pair_rule(clipset, make):
    from exsynth.data.synthetic_video import SyntheticVideoDataset  # the keys it mirrors
    ds = make(clipset, length=24)
    names = [c.name for c in ds.clips]
    assert names == ["clip_0000", "clip_0001", "clip_0002"]
    clips = [synthetic_clip(0, "train", i, S, K, speed=SPEED) for i in range(3)]
    rendered = torch.stack([torch.stack([c.frame(t) for t in range(FRAMES)]) for c in clips])  # (C, F, 3, S, S)
    samples = list(ds)
    assert len(samples) == 24
    ref_keys = set(SyntheticVideoDataset(S, K, length=1)[0])
    for s in samples:
        assert ref_keys <= set(s)
        for k, (shape, dtype) in KEYS.items():
            assert tuple(s[k].shape) == shape and s[k].dtype == dtype, k
        assert -1.0 <= float(s["photo"].min()) and float(s["photo"].max()) <= 1.0
        c, t, t2, o, u = s["clip"], s["frame"], s["consistent_frame"], s["inconsistent_clip"], s["inconsistent_frame"]
        # the pair rule: same clip within the window, t' != t; the other frame from another clip
        assert t != t2 and abs(t - t2) <= WINDOW and o != c
        # the frames are the ones reported (decoded content matches the rendered frame)
        assert _identify(s["photo"], rendered) == (c, t)
        assert _identify(s["consistent"], rendered) == (c, t2)
        assert _identify(s["inconsistent"], rendered) == (o, u)
        assert torch.equal(s["image"], s["photo"])
        # labels are the exact layouts of those frames
        assert torch.equal(s["label_index"], torch.from_numpy(clips[c].layout(t)))
        assert torch.equal(s["consistent_label"].argmax(0), torch.from_numpy(clips[c].layout(t2)))
        assert torch.equal(s["inconsistent_label"].argmax(0), torch.from_numpy(clips[o].layout(u)))
        same = bool(s["same_style"])
        assert torch.equal(s["exemplar"], s["consistent"] if same else s["inconsistent"])
        assert torch.equal(s["exemplar_label"], s["consistent_label"] if same else s["inconsistent_label"])
    assert 0 < sum(bool(s["same_style"]) for s in samples) < 24  # p = 0.3 of 24 draws
    assert len({s["clip"] for s in samples}) == 3


def test_dali_resized_geometry_matches_labels(tmp_path):
    # a 48 x 64 clip read at 32 px: the frame's centred square, resized, lines up with its labels
    root = tmp_path / "wide"
    from exsynth.imageio import write_label
    for c in range(2):
        clip = synthetic_clip(1, "train", c, (48, 64), K, speed=SPEED)
        frames = []
        for t in range(8):
            write_label(torch.from_numpy(clip.layout(t)), root / "labels" / f"c{c}" / f"{t:06d}.png")
            frames.append(((clip.frame(t).permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
        write_clip(root / "videos" / f"c{c}.avi", np.stack(frames), codec="mjpeg")
    ds = _dali(root, length=6)
    for s in ds:
        clip = synthetic_clip(1, "train", s["clip"], (48, 64), K, speed=SPEED)
        exact = clip.frame(s["frame"])[:, :, 8:56]  # the centred 48 x 48 square
        want = torch.nn.functional.interpolate(exact[None], size=(S, S), mode="bilinear", antialias=True)[0]
        assert (s["photo"] - want).abs().mean() < 0.08
        # each label pixel is the class of the exact layout at the same place
        lab = torch.from_numpy(clip.layout(s["frame"]))[:, 8:56]
        idx = ((torch.arange(S) + 0.5) * 48 / S).floor().long()  # output pixel centres in the square
        assert torch.equal(s["label_index"], lab[idx][:, idx])


def test_dali_frames_at_the_training_size_skip_the_resize_unchanged(clipset, monkeypatch):
    # clips already S x S skip DALI's resize (as the PyAV reader skips its own): the same samples,
    # to the value, as through the resize at scale 1
    from exsynth.video.dali_reader import DaliVideoPairs
    keys = ("photo", "consistent", "inconsistent")
    assert not _dali(clipset)._resize_needed()
    skipped = list(_dali(clipset, length=6))
    monkeypatch.setattr(DaliVideoPairs, "_resize_needed", lambda self: True)
    resized = list(_dali(clipset, length=6))
    for a, b in zip(skipped, resized):
        assert (a["clip"], a["frame"], a["consistent_frame"]) == (b["clip"], b["frame"], b["consistent_frame"])
        for k in keys:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_dali_shards_split_sequences_between_ranks(tmp_path):
    # 4 clips x 3 sequences of 5 frames (every 5): in one epoch the two ranks read disjoint
    # halves of the 12 sequences (DALI shards the sequence list), together all of them
    root = _make_set(tmp_path / "four", clips=4)
    seen = []
    for rank in range(2):
        samples = list(_dali(root, rank=rank, world_size=2, step=5, length=6))
        # a sequence is (clip, first frame): t and t' both lie in [first, first + 4]
        assert all(s["frame"] // 5 == s["consistent_frame"] // 5 for s in samples)
        seen.append({(s["clip"], s["frame"] // 5 * 5) for s in samples})
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {(c, f) for c in range(4) for f in (0, 5, 10)}


def test_dali_epochs_reshuffle_and_resume_draws_fresh(clipset):
    # 3 clips x 3 sequences (every 5 frames): two epochs hold the same 9 sequences, reordered
    two = [(s["clip"], s["frame"] // 5 * 5) for s in _dali(clipset, step=5, length=18)]
    assert sorted(two[:9]) == sorted(two[9:]) == [(c, f) for c in range(3) for f in (0, 5, 10)]
    assert two[:9] != two[9:]
    ds = _dali(clipset, step=1, length=36)  # 3 clips x 12 sequences: 36 a epoch
    first = [(s["clip"], s["frame"], s["consistent_frame"]) for s in ds]
    second = [(s["clip"], s["frame"], s["consistent_frame"]) for s in ds]
    assert first == second  # the same start point: the same samples
    ds.start(step=3, batch_size=2)  # resumed after 6 samples: a fresh order, numbered on
    resumed = list(ds)
    assert [(s["clip"], s["frame"], s["consistent_frame"]) for s in resumed] != first
    assert resumed[0]["index"] == 6


def test_bad_clips_are_skipped_with_one_warning_each(tmp_path, clipset):
    root = tmp_path / "bad"
    shutil.copytree(clipset, root)
    good = (root / "videos" / "clip_0000.webm").read_bytes()
    (root / "videos" / "truncated.webm").write_bytes(good[: len(good) // 3])
    (root / "videos" / "garbage.webm").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "videos" / "empty.avi").write_bytes(b"")
    write_clip(root / "videos" / "short.webm", np.zeros((3, S, S, 3), np.uint8))  # < window + 1 frames
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _dali(root, length=4)
        samples = list(ds)
    msgs = [str(w.message) for w in caught if "skipped" in str(w.message)]
    for name in ("truncated.webm", "garbage.webm", "empty.avi", "short.webm"):
        assert sum(name in m for m in msgs) == 1, (name, msgs)
    assert [c.name for c in ds.clips] == ["clip_0000", "clip_0001", "clip_0002"] and len(samples) == 4


def test_missing_label_skips_the_sample_with_a_warning(tmp_path, clipset):
    root = tmp_path / "holes"
    shutil.copytree(clipset, root)
    for t in range(FRAMES):  # clip 1 keeps no labels but frame 0's
        if t:
            (root / "labels" / "clip_0001" / f"{t:06d}.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = list(_dali(root, length=20))
    assert len(samples) == 20
    for s in samples:  # every served sample has all three labels on disk
        for c, t in ((s["clip"], s["frame"]), (s["clip"], s["consistent_frame"]),
                     (s["inconsistent_clip"], s["inconsistent_frame"])):
            assert c != 1 or t == 0
    assert any("missing label map" in str(w.message) and "clip_0001" in str(w.message) for w in caught)


def test_folder_without_usable_clips_is_an_error(tmp_path, clipset):
    (tmp_path / "empty" / "videos").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"0 usable clip\(s\).*at least 2"):
        _dali(tmp_path / "empty")
    with pytest.raises(ValueError, match="no videos/ folder"):
        _dali(tmp_path)
    one = tmp_path / "one"
    shutil.copytree(clipset, one)
    for name in ("clip_0001.webm", "clip_0002.webm"):
        (one / "videos" / name).unlink()
    with pytest.raises(ValueError, match=r"1 usable clip\(s\)"):
        _dali(one)


def test_h264_on_the_cpu_names_the_file_and_the_fix(tmp_path):
    from exsynth.video.writer import _encoder
    try:
        _encoder("h264")
    except ValueError:
        pytest.skip("this PyAV build has no H.264 encoder")
    root = _make_set(tmp_path / "h264", clips=2, codec="h264")
    with pytest.raises(ValueError, match=r"clip_0000\.mp4: h264 video.*exsynth video transcode SRC DST --codec vp9"):
        _dali(root)
    # the fix works: transcoded (labels copied along), the folder reads
    assert cli.main(["video", "transcode", str(root), str(tmp_path / "vp9"), "--codec", "vp9", "--quiet"]) == 0
    s = next(iter(_dali(tmp_path / "vp9", length=1)))
    assert torch.equal(s["label_index"], torch.from_numpy(
        synthetic_clip(0, "train", s["clip"], S, K, speed=SPEED).layout(s["frame"])))


def test_missing_dali_names_the_extra(monkeypatch):
    from exsynth.video import dali_reader
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ImportError, match=r'pip install "exsynth\[video\]"'):
        dali_reader.require_dali()


def test_import_exsynth_does_not_import_dali():
    import subprocess
    code = ("import sys, exsynth; from exsynth.registry import data_sources; assert 'video' in data_sources(); "
            "assert 'nvidia.dali' not in sys.modules and 'av' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- command line ---------------------------------------------------------------------------------

def test_cli_synth_then_train_one_step_on_video(tmp_path, capsys):
    root = tmp_path / "clips"
    assert cli.main(["video", "synth", str(root), "--clips", "3", "--frames", "12", "--size", str(S),
                     "--classes", str(K), "--codec", "mjpeg"]) == 0
    assert len(list((root / "videos").glob("*.avi"))) == 3
    assert len(list((root / "labels" / "clip_0002").glob("*.png"))) == 12
    assert cli.main(["video", "synth", str(root)]) == 2  # refuses to write over clips
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "run"
    args = ["train", "--model", "pix2pixsc", "--dataset", "video", "--data", str(root), "--size", str(S),
            "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out), "--num-classes", str(K),
            "--option", "width=4", "--option", "downsamples=2", "--option", "blocks=1",
            "--option", "disc_layers=2", "--disc-width", "4", "--allow-random-vgg",
            "--data-option", f"window={WINDOW}", "--data-option", "threads=1"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1
    assert json.loads((out / "config.json").read_text())["dataset"] == "video"
