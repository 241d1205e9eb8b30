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
