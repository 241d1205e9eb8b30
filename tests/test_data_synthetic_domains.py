"""synthetic-domains: domain A in the fixed palette, domain B in the sample's style, exact GT_AB
and GT_BA; the class_hues option (class k's colour from the k-th hue sector) and its errors."""
import numpy as np
import pytest
import torch

from exsynth.data.synthetic import render
from exsynth.data.synthetic_domains import (SyntheticDomainsDataset, SyntheticDomainsOptions, class_hue_colours,
                                            palette_style, hue)


@pytest.mark.parametrize("class_hues", [False, True])
def test_samples_are_the_two_renders_of_the_layouts(class_hues):
    ds = SyntheticDomainsDataset(32, length=4, split="test", options=SyntheticDomainsOptions(class_hues=class_hues))
    for i in range(4):
        s, base = ds[i], ds.base[i]
        style = ds.style_b(i)
        torch.testing.assert_close(s["label"], render(base["label_index"], palette_style(6)), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar"], render(base["exemplar_label_index"], style), rtol=0, atol=0)
        torch.testing.assert_close(s["image"], render(base["label_index"], style), rtol=0, atol=0)
        torch.testing.assert_close(s["exemplar_label"], render(base["exemplar_label_index"], palette_style(6)),
                                   rtol=0, atol=0)
        assert torch.equal(s["label_index"], base["label_index"])
    again = SyntheticDomainsDataset(32, length=4, split="test", options=SyntheticDomainsOptions(class_hues=class_hues))
    assert all(torch.equal(ds[i]["image"], again[i]["image"]) for i in range(4))       # a pure function of the index


def test_class_hues_puts_each_class_in_its_own_hue_sector():
    rng = np.random.default_rng(0)
    for k in (2, 6, 9):
        for _ in range(20):
            c = class_hue_colours(rng, k)
            assert c.shape == (k, 3) and np.abs(c).max() <= 0.6 + 1e-12
            h = hue(torch.from_numpy(c).T).numpy()
            sector = h * k - np.arange(k)
            assert np.all((sector >= 0.2 - 1e-9) & (sector <= 0.8 + 1e-9)), (k, h)
    on = SyntheticDomainsDataset(32, length=3, split="train", options=SyntheticDomainsOptions(class_hues=True))
    off = SyntheticDomainsDataset(32, length=3, split="train")
    for i in range(3):
        # only the base colours change: layouts, textures and domain A are the same
        a, b = on.style_b(i).as_dict(), off.style_b(i).as_dict()
        assert not np.allclose(a["colour"], b["colour"])
        assert all(np.array_equal(a[f], b[f]) for f in a if f != "colour")
        assert torch.equal(on[i]["label"], off[i]["label"])


def test_hue_matches_colorsys():
    import colorsys
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 1, size=(50, 3))
    want = np.array([colorsys.rgb_to_hsv(*c)[0] for c in rgb])
    got = hue(torch.from_numpy(rgb * 2 - 1).T).numpy()       # [-1, 1] pixels: same hue
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_options_are_checked():
    with pytest.raises(ValueError, match="class_hues must be True or False, got 'yes'"):
        SyntheticDomainsOptions(class_hues="yes")
    with pytest.raises(ValueError, match="classes must be >= 2, got 1"):
        SyntheticDomainsOptions(classes=1)
