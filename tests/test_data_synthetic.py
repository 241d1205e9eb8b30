"""The synthetic exemplar dataset: determinism, exact ground truth, style sharing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from exsynth.data import (
    TEXTURES,
    SyntheticExemplarDataset,
    edge_map,
    ensure_classes,
    one_hot,
    render,
    sample_layout,
    sample_style,
)

TENSOR_KEYS = ("label", "label_index", "image", "exemplar", "exemplar_label",
               "exemplar_label_index", "edges")


def assert_same_sample(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def class_means(img, lab, min_pixels):
    """{class: mean RGB} over classes covering at least `min_pixels` pixels."""
    out = {}
    for c in lab.unique().tolist():
        m = lab == c
        if int(m.sum()) >= min_pixels:
            out[c] = img[:, m].mean(dim=1)
    return out


# ---------------------------------------------------------------------------
# determinism and splits
# ---------------------------------------------------------------------------


def test_deterministic_per_index_and_across_objects():
    ds = SyntheticExemplarDataset(size=64, length=20, seed=3)
    first = [ds[i] for i in (0, 5, 19)]
    # same object, again and in another order
    for i, s in zip((19, 5, 0), reversed(first)):
        assert_same_sample(ds[i], s)
    # a new object with the same arguments, touched in a different order
    ds2 = SyntheticExemplarDataset(size=64, length=20, seed=3)
    _ = ds2[7]
    for i, s in zip((0, 5, 19), first):
        assert_same_sample(ds2[i], s)
    # the global torch / numpy RNG plays no part
    torch.manual_seed(123)
    np.random.seed(123)
    assert_same_sample(ds2[5], first[1])
    # negative indices and bounds
    assert_same_sample(ds[-1], first[2])
    with pytest.raises(IndexError):
        ds[20]
    # the length does not change sample i
    assert_same_sample(SyntheticExemplarDataset(size=64, length=50, seed=3)[5], first[1])


def test_cache_returns_identical_copies():
    ds = SyntheticExemplarDataset(size=32, length=4, cache=True)
    a = ds[1]
    a["image"].zero_()  # callers may modify what they get
    b = ds[1]
    assert_same_sample(b, SyntheticExemplarDataset(size=32, length=4)[1])


def test_train_test_and_seeds_differ():
    kw = dict(size=64, length=8)
    tr, te = SyntheticExemplarDataset(split="train", **kw), SyntheticExemplarDataset(split="test", **kw)
    other_seed = SyntheticExemplarDataset(split="train", seed=1, **kw)
    for i in range(8):
        a, b, c = tr[i], te[i], other_seed[i]
        assert not torch.equal(a["image"], b["image"])
        assert not torch.equal(a["label_index"], b["label_index"])
        assert not torch.equal(a["image"], c["image"])
        assert not tr.style(i).equals(te.style(i))
        assert a["split"] == "train" and b["split"] == "test"
    with pytest.raises(ValueError):
        SyntheticExemplarDataset(split="nope")


# ---------------------------------------------------------------------------
# shapes, dtypes, ranges
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size,k", [(64, 6), (128, 6), ((48, 80), 4), (16, 3)])
def test_shapes_dtypes_ranges(size, k):
    ds = SyntheticExemplarDataset(size=size, num_classes=k, length=3)
    h, w = (size, size) if isinstance(size, int) else size
    for i in range(len(ds)):
        s = ds[i]
        assert s["label"].shape == (k, h, w) and s["label"].dtype == torch.float32
        assert s["exemplar_label"].shape == (k, h, w) and s["exemplar_label"].dtype == torch.float32
        assert s["label_index"].shape == (h, w) and s["label_index"].dtype == torch.int64
        assert s["exemplar_label_index"].shape == (h, w) and s["exemplar_label_index"].dtype == torch.int64
        for key in ("image", "exemplar"):
            assert s[key].shape == (3, h, w) and s[key].dtype == torch.float32
            assert s[key].min() >= -1 and s[key].max() <= 1
            assert torch.isfinite(s[key]).all()
        assert s["edges"].shape == (1, h, w) and s["edges"].dtype == torch.float32
        assert set(s["edges"].unique().tolist()) <= {0.0, 1.0}
        for lab, idx in (("label", "label_index"), ("exemplar_label", "exemplar_label_index")):
            assert set(s[lab].unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(s[lab].sum(0), torch.ones(h, w))
            assert torch.equal(s[lab].argmax(0), s[idx])
        assert 0 <= int(s["label_index"].min()) and int(s["label_index"].max()) < k
        assert s["style_id"] == i and s["index"] == i and s["seed"] == 0
        # a layout has structure: at least two classes (background + shapes)
        assert s["label_index"].unique().numel() >= 2


def test_size_128_and_resolution_consistency():
    """Coordinates are normalised, so 128 px is the 64 px scene rasterised finer."""
    a = SyntheticExemplarDataset(size=64, length=3)
    b = SyntheticExemplarDataset(size=128, length=3)
    for i in range(3):
        la, sb = a[i]["label_index"], b[i]
        assert sb["image"].shape == (3, 128, 128)
        assert a.style(i).equals(b.style(i))
        agree = (sb["label_index"][1::2, 1::2] == la).float().mean().item()
        assert agree > 0.95
        present = sb["label_index"].unique()
        assert all(bool((sb["exemplar_label_index"] == c).any()) for c in present)


# ---------------------------------------------------------------------------
# exact ground truth
# ---------------------------------------------------------------------------


def test_image_is_render_of_layout_with_style():
    ds = SyntheticExemplarDataset(size=64, length=6, seed=11)
    for i in range(len(ds)):
        s = ds[i]
        style = ds.style(i)
        lay, ex = ds.layouts(i)
        assert torch.equal(torch.from_numpy(lay), s["label_index"])
        assert torch.equal(torch.from_numpy(ex), s["exemplar_label_index"])
        assert torch.equal(render(lay, style), s["image"])
        assert torch.equal(render(s["label_index"], style), s["image"])
        assert torch.equal(render(ex, style), s["exemplar"])


def test_pixels_follow_their_class_style_everywhere():
    """A pixel's value depends only on its class and absolute position, and
    different classes of one style look different."""
    ds = SyntheticExemplarDataset(size=64, length=6, seed=5)
    for i in range(len(ds)):
        s, style = ds[i], ds.style(i)
        lab = s["label_index"]
        for c in lab.unique().tolist():
            full = render(np.full((64, 64), c), style)
            m = lab == c
            assert torch.equal(full[:, m], s["image"][:, m])
            # texture stays within the class's amplitude around its base colour
            base = torch.as_tensor(style.colour[c], dtype=torch.float32)[:, None]
            assert (s["image"][:, m] - base).abs().max() <= style.amplitude[c] + 1e-6
        means = class_means(s["image"], lab, min_pixels=64)
        cls = sorted(means)
        assert len(cls) >= 2
        for a in cls:
            for b in cls:
                if a < b:
                    assert (means[a] - means[b]).norm() > 0.2, (i, a, b)


def test_textures_all_used_and_distinct():
    kinds = set()
    for i in range(40):
        st = sample_style(np.random.default_rng(i), 6)
        kinds.update(st.texture_names())
    assert kinds == set(TEXTURES)
    # restricting textures is honoured; "flat" means constant colour per class
    ds = SyntheticExemplarDataset(size=32, length=2, textures=("flat",))
    s, st = ds[0], ds.style(0)
    lab = s["label_index"]
    for c in lab.unique().tolist():
        vals = s["image"][:, lab == c]
        assert torch.allclose(vals, torch.as_tensor(st.colour[c], dtype=torch.float32)[:, None].expand_as(vals))


# ---------------------------------------------------------------------------
# exemplar
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size,k", [(64, 6), (32, 12), (16, 24)])
def test_exemplar_contains_every_input_class(size, k):
    ds = SyntheticExemplarDataset(size=size, num_classes=k, length=40)
    for i in range(len(ds)):
        s = ds[i]
        ex = s["exemplar_label_index"]
        for c in s["label_index"].unique().tolist():
            n = int((ex == c).sum())
            assert n >= 1, (i, c)
        if size == 64:
            counts = torch.bincount(ex.flatten(), minlength=k)
            assert all(int(counts[c]) >= ds.min_exemplar_pixels for c in s["label_index"].unique())


def test_ensure_classes_fallback_guarantees_presence():
    rng = np.random.default_rng(0)
    lay = np.zeros((20, 20), dtype=np.int64)
    # no random tries: the grid fallback must place every class
    out = ensure_classes(lay, range(1, 10), rng, min_pixels=10, tries=0)
    counts = np.bincount(out.ravel(), minlength=10)
    assert (counts[1:10] >= 10).all()
    assert np.array_equal(lay, np.zeros((20, 20)))  # input untouched
    # already satisfied -> unchanged
    lay = sample_layout(np.random.default_rng(1), 32, 4)
    assert np.array_equal(ensure_classes(lay, np.unique(lay), rng), lay)


def test_exemplar_shares_style_but_not_layout():
    ds = SyntheticExemplarDataset(size=64, length=10, seed=2)
    close, far = [], []
    for i in range(len(ds)):
        s = ds[i]
        lab, ex = s["label_index"], s["exemplar_label_index"]
        assert not torch.equal(lab, ex)
        assert (lab != ex).float().mean() > 0.1
        # same class at the same position -> exactly the same pixel
        same = lab == ex
        assert torch.equal(s["image"][:, same], s["exemplar"][:, same])
        # class-wise mean colours match closely
        mi = class_means(s["image"], lab, 200)
        me = class_means(s["exemplar"], ex, 200)
        for c in set(mi) & set(me):
            close.append((mi[c] - me[c]).abs().max().item())
            # and the exemplar's class c is nearer to the image's class c than to any other class
            nearest = min(mi, key=lambda d: (mi[d] - me[c]).norm().item())
            assert nearest == c
        # an exemplar of another style does not match
        o = ds[(i + 1) % len(ds)]
        mo = class_means(o["exemplar"], o["exemplar_label_index"], 200)
        for c in set(mi) & set(mo):
            far.append((mi[c] - mo[c]).abs().max().item())
    assert len(close) >= 10 and len(far) >= 10
    assert max(close) < 0.3 and float(np.median(close)) < 0.05
    assert float(np.median(far)) > 3 * float(np.median(close)) + 0.1


def test_num_styles_shares_styles_across_indices():
    ds = SyntheticExemplarDataset(size=32, length=9, num_styles=3)
    assert [ds[i]["style_id"] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert ds.style(1).equals(ds.style(4))
    assert not ds.style(1).equals(ds.style(2))
    a, b = ds[1], ds[4]
    assert not torch.equal(a["label_index"], b["label_index"])
    same = a["label_index"] == b["label_index"]
    assert torch.equal(a["image"][:, same], b["image"][:, same])


# ---------------------------------------------------------------------------
# edges and one-hot helpers
# ---------------------------------------------------------------------------


def reference_edges(lab):
    """Independent: a pixel is a boundary iff its 4-neighbourhood (clamped at
    the border) holds more than one class."""
    x = lab[None, None].double()
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    neigh = torch.stack([p[..., 1:-1, :-2], p[..., 1:-1, 2:], p[..., :-2, 1:-1], p[..., 2:, 1:-1]])
    return (neigh != x).any(0)[0, 0].float()


def test_edges_exactly_at_class_boundaries():
    ds = SyntheticExemplarDataset(size=64, length=6)
    for i in range(len(ds)):
        s = ds[i]
        lab, e = s["label_index"], s["edges"][0]
        assert torch.equal(e, reference_edges(lab))
        assert e.sum() > 0
        # the edge set is symmetric: both sides of each horizontal boundary
        dx = lab[:, 1:] != lab[:, :-1]
        assert bool((e[:, 1:][dx] == 1).all() and (e[:, :-1][dx] == 1).all())
    # no shapes -> a single class -> no edges
    flat = SyntheticExemplarDataset(size=32, length=1, num_shapes=(0, 0))[0]
    assert flat["label_index"].unique().numel() == 1 and flat["edges"].sum() == 0
    # batched and torch input
    labs = torch.stack([ds[0]["label_index"], ds[1]["label_index"]])
    assert torch.equal(edge_map(labs), torch.stack([ds[0]["edges"], ds[1]["edges"]]))


def test_one_hot_helper():
    lab = torch.tensor([[0, 2], [1, 2]])
    oh = one_hot(lab, 3)
    assert oh.shape == (3, 2, 2) and torch.equal(oh.argmax(0), lab)
    assert torch.equal(oh, F.one_hot(lab, 3).permute(2, 0, 1).float())
    with pytest.raises(ValueError):
        one_hot(lab, 2)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------


def test_dataloader_workers_give_identical_batches():
    ds = SyntheticExemplarDataset(size=32, length=8, seed=4)
    runs = []
    for workers in (0, 2):
        dl = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
        runs.append(list(dl))
    assert len(runs[0]) == len(runs[1]) == 2
    for b0, b1 in zip(*runs):
        for k in TENSOR_KEYS + ("style_id", "index", "seed"):
            assert torch.equal(b0[k], b1[k]), k
        assert b0["split"] == b1["split"] == ["train"] * 4
    assert runs[0][0]["image"].shape == (4, 3, 32, 32)
    assert torch.equal(runs[0][1]["image"][2], ds[6]["image"])


def test_background_class_is_the_layouts_own():
    """synthetic-edges' foreground mask excludes exactly the class the layout was painted on,
    even where shapes cover most of the border (a guess from the border would fail there)."""
    from exsynth.data.synthetic import _STREAM_INPUT, SyntheticEdgeView
    ds = SyntheticExemplarDataset(32, num_classes=6, length=40, seed=5, radius=(0.3, 0.6))
    view = SyntheticEdgeView(ds)
    for i in range(40):
        plain = sample_layout(ds._rng(_STREAM_INPUT, i), ds.size, 6, num_shapes=(0, 0))
        assert ds.background(i) == int(plain[0, 0])
        s = view[i]
        assert torch.equal(s["mask"][0] > 0, s["label_index"] != ds.background(i))
