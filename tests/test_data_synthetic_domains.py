"""synthetic-domains: domain A in the fixed palette, domain B in the sample's style, exact GT_AB
and GT_BA, a pure function of the index; option errors."""
import pytest
import torch

from exsynth.data.synthetic import render
from exsynth.data.synthetic_domains import SyntheticDomainsDataset, SyntheticDomainsOptions, palette_style


def test_samples_are_the_two_renders_of_the_layouts():
    ds = SyntheticDomainsDataset(32, length=4, split="test")
    for i in range(4):
        s, base = ds[i], ds.base[i]
        style = ds.base.style(i)
        torch.testing.assert_close(s["label"], render(base["label_index"], palette_style(6)), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar"], render(base["exemplar_label_index"], style), rtol=0, atol=0)
        torch.testing.assert_close(s["image"], render(base["label_index"], style), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar_label"], render(base["exemplar_label_index"], palette_style(6)),
                                   rtol=0, atol=0)
        assert torch.equal(s["label_index"], base["label_index"])
    again = SyntheticDomainsDataset(32, length=4, split="test")
    assert all(torch.equal(ds[i]["image"], again[i]["image"]) for i in range(4))


def test_options_are_checked():
    with pytest.raises(ValueError, match="classes must be >= 2, got 1"):
        SyntheticDomainsOptions(classes=1)


def test_class_textures_give_class_k_texture_k_in_both_domains():
    import numpy as np

    from exsynth.data.synthetic import TEXTURES

    opts = SyntheticDomainsOptions(classes=5, class_textures=True)
    ds = SyntheticDomainsDataset(32, length=4, split="test", options=opts)
    kinds = np.arange(5)
    assert ds.style_a.texture_names() == TEXTURES
    np.testing.assert_array_equal(ds.style_a.colour, palette_style(5).colour)
    for i in range(4):
        s, (lay, ex) = ds[i], ds.base.layouts(i)
        b = ds._fine(ds.base.style(i))
        assert b.kind.tolist() == kinds.tolist() and (b.freq >= 32 / 6 / 2).all() and (b.freq <= 32 / 6 + 1e-9).all()
        torch.testing.assert_close(s["image"], render(lay, b), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar"], render(ex, b), rtol=0, atol=0)
        torch.testing.assert_close(s["label"], render(lay, ds.style_a), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar_label"], render(ex, ds.style_a), rtol=0, atol=0)
        assert torch.equal(s["label_index"], torch.from_numpy(lay))
        # a flat class is one colour; a textured one varies within the image
        for k in np.unique(lay):
            spread = s["image"][:, torch.from_numpy(lay == k)].std(1).max()
            assert (spread == 0) == (k == 0), (i, k, spread)
    # A is one fixed style: the same class at the same place looks the same in every sample
    other = SyntheticDomainsDataset(32, length=4, split="train", options=opts)
    assert other.style_a.equals(ds.style_a)
    # the training split's cache hands out copies: changing one leaves the next fetch intact
    first = other[1]["image"]
    first.zero_()
    again = other[1]["image"]
    assert not torch.equal(again, first)
    torch.testing.assert_close(again, SyntheticDomainsDataset(32, length=4, split="train", options=opts)[1]["image"],
                               rtol=0, atol=0)


def test_class_textures_need_a_texture_per_class():
    with pytest.raises(ValueError, match="classes must be <= 5 .* got 6"):
        SyntheticDomainsOptions(classes=6, class_textures=True)
