"""The model and data-source registries: a model defined here, in the test file, trains,
synthesizes and evaluates through the CLI with no edit to exsynth; the upper layers never
name a model; unknown names list the registered ones."""
import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import exsynth
from exsynth import cli, registry
from exsynth.checkpoint import CheckpointError, load_checkpoint, load_generator
from exsynth.data import SyntheticExemplarDataset
from exsynth.demo import DEMO_CHECKPOINT
from exsynth.imageio import read_image, write_image, write_label
from exsynth.losses import Objective
from exsynth.registry import DataSourceSpec, ModelSpec

K, S = 4, 16


# ---- a model that exists only in this file --------------------------------------------------------

@dataclass
class TinyConfig:
    """A two-conv exemplar-conditioned generator.

    width: hidden channels.
    use_exemplar: feed the exemplar's mean colour (False: label only).
    """

    label_channels: int
    width: int = 8
    use_exemplar: bool = True


class TinyGenerator(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.body = nn.Sequential(nn.Conv2d(cfg.label_channels + 3, cfg.width, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(cfg.width, 3, 3, padding=1))

    def forward(self, label, exemplar, exemplar_label=None):
        colour = exemplar.mean((2, 3), keepdim=True).expand(-1, -1, *label.shape[2:])
        if not self.cfg.use_exemplar:
            colour = torch.zeros_like(colour)
        return {"fake": torch.tanh(self.body(torch.cat([label, colour], 1)))}


class TinyObjective(Objective):
    loss_names = ("l1", "adv", "gan_feat")
    default_weights = dict(l1=1.0, adv=0.0, gan_feat=0.0)
    ddp_find_unused_parameters = False

    def generator_terms(self, batch, step, gen):
        label, image, exemplar, exemplar_label = self.inputs(batch, gen)
        fake = self.G(label, exemplar, exemplar_label)["fake"]
        terms = {"l1": F.l1_loss(fake, image)}
        self.gan_terms(terms, label, fake, image)
        return self.total(terms), terms, dict(label=label, exemplar=exemplar, fake=fake, image=image)


def _run(model, label, exemplar, exemplar_label=None, visuals=()):
    return {"fake": model(label, exemplar, exemplar_label)["fake"]}


TINY = ModelSpec(name="tinytest", config=TinyConfig, generator=TinyGenerator, objective=TinyObjective,
                 supervision=("pair", "pseudo"), unpaired_supervision="pseudo", run=_run,
                 needs_exemplar_label=lambda cfg: False, size_multiple=lambda cfg: 4,
                 presets={"tinytest-cpu16": dict(model="tinytest", size=S, num_classes=K, batch_size=2, steps=3)})


@pytest.fixture
def tiny_model():
    registry.register_model(TINY, replace=True)
    yield TINY
    registry.unregister_model(TINY.name)


def _one_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"exsynth {argv[0]}: error: "), err
    return err[0]


def test_tiny_model_trains_synthesizes_and_evaluates_through_the_cli(tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "tinytest", "--size", str(S), "--num-classes", str(K), "--batch-size", "2",
                     "--steps", "3", "--train-length", "8", "--out", str(out), "--quiet", "--width", "6",
                     "--loss", "adv=0.5", "--disc-width", "8", "--disc-layers", "2", "--disc-scales", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and math.isfinite(summary["loss"])
    ck = out / "checkpoints" / "latest.pt"
    payload = load_checkpoint(ck, expect_model="tinytest")
    assert payload["model_config"]["width"] == 6            # the model's own flag reached its config
    assert "discriminator" in payload and "opt_d" in payload  # the objective's discriminator and optimiser
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"G/l1", "G/adv", "D/hinge"} <= set(lines[-1])
    # resume through the registry too
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 4

    s = SyntheticExemplarDataset(S, num_classes=K, length=1, split="test")[0]
    write_label(s["label_index"], tmp_path / "in.png")
    write_image(s["exemplar"], tmp_path / "ex.png")
    assert cli.main(["synthesize", "--checkpoint", str(ck), "--input", str(tmp_path / "in.png"),
                     "--exemplar", str(tmp_path / "ex.png"), "--out", str(tmp_path / "o.png")]) == 0
    assert read_image(tmp_path / "o.png").shape == (3, S, S)
    capsys.readouterr()
    # this model declares no warped exemplar: asking for one is a clear error
    assert "no warped picture" in _one_error(capsys, ["synthesize", "--checkpoint", str(ck), "--input",
                                                      str(tmp_path / "in.png"), "--exemplar", str(tmp_path / "ex.png"),
                                                      "--out", str(tmp_path / "o2.png"), "--warped"])
    js = tmp_path / "e.json"
    assert cli.main(["eval", "--checkpoint", str(ck), "--length", "4", "--class-mean-samples", "4",
                     "--json", str(js)]) == 0
    res = json.loads(js.read_text())["results"]
    assert set(res) == {"model", "const_exemplar", "class_mean"}  # no "warped" for this model
    assert all(math.isfinite(v) for m in res.values() for v in m.values())


def test_presets_and_flags_come_from_the_spec(tiny_model, capsys):
    from exsynth.train import PRESETS, TrainConfig, default_losses
    assert "tinytest-cpu16" in PRESETS and PRESETS["tinytest-cpu16"]["model"] == "tinytest"
    assert default_losses("tinytest") == dict(l1=1.0, adv=0.0, gan_feat=0.0)
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "tinytest", "-h"])
    help_text = capsys.readouterr().out
    assert "--use-exemplar" in help_text and "feed the exemplar's mean colour" in help_text
    assert "the GLOBAL batch" in help_text  # TrainConfig's docstring is the help text
    with pytest.raises(ValueError, match="supervision 'self' is not defined for tinytest"):
        TrainConfig(model="tinytest", supervision="self")


def test_unknown_names_list_the_registered_ones(tmp_path, capsys):
    msg = _one_error(capsys, ["train", "--model", "nosuch", "--out", str(tmp_path / "r")])
    assert "'nosuch' is not registered" in msg and all(m in msg for m in registry.models())
    msg = _one_error(capsys, ["train", "--dataset", "nosuch", "--out", str(tmp_path / "r")])
    assert "'nosuch' is not registered" in msg and "synthetic" in msg and "folder" in msg
    msg = _one_error(capsys, ["eval", "--checkpoint", str(DEMO_CHECKPOINT), "--dataset", "nosuch"])
    assert "registered data sources" in msg
    msg = _one_error(capsys, ["eval", "--checkpoint", str(DEMO_CHECKPOINT), "--dataset", "folder",
                              "--data", str(tmp_path)])
    assert "the folder data source gives no exemplars to synthesize from (give it a pair list" in msg
    assert not (tmp_path / "r").exists()


def test_checkpoint_of_an_unregistered_model_names_it(tmp_path, tiny_model):
    from exsynth.train import TrainConfig, Trainer
    Trainer(TrainConfig(model="tinytest", out=str(tmp_path / "r"), size=S, num_classes=K, batch_size=2, steps=1,
                        train_length=4), quiet=True).run()
    ck = tmp_path / "r" / "checkpoints" / "latest.pt"
    registry.unregister_model("tinytest")
    with pytest.raises(CheckpointError, match="holds a 'tinytest' model, which is not registered"):
        load_generator(ck)


def test_registration_conflicts_are_refused(tiny_model):
    import dataclasses
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_model(dataclasses.replace(TINY, description="another"))
    with pytest.raises(registry.RegistryError, match="already defined by model"):
        registry.register_model(dataclasses.replace(TINY, name="tiny2", presets={"tinytest-cpu16": dict(model="tiny2")}))
    with pytest.raises(registry.RegistryError, match="unpaired_supervision"):
        dataclasses.replace(TINY, unpaired_supervision="pair")
    with pytest.raises(registry.RegistryError, match="default model"):
        registry.register_model(dataclasses.replace(TINY, name="tiny3", presets={}, default=True))


def test_a_data_source_defined_here_trains(tmp_path, capsys, tiny_model):
    from torch.utils.data import Dataset

    @dataclass
    class StripesOptions:
        """period: stripe period in pixels."""

        period: int = 4

    class Stripes(Dataset):
        def __init__(self, size, k, n, period):
            self.size, self.k, self.n, self.period = size, k, n, period

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            idx = (torch.arange(self.size)[None, :] // self.period + i).remainder(self.k).expand(self.size, -1)
            lab = F.one_hot(idx, self.k).permute(2, 0, 1).float()
            return {"label": lab, "image": lab[:3] * 2 - 1}

    def build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
        return Stripes(size, num_classes, length or 8, options.period)

    registry.register_data_source(DataSourceSpec(name="stripes-test", build=build, options=StripesOptions,
                                                 needs_root=False), replace=True)
    try:
        assert cli.main(["train", "--model", "tinytest", "--dataset", "stripes-test", "--data", "none",
                         "--period", "2", "--size", str(S), "--num-classes", str(K), "--batch-size", "2",
                         "--steps", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 0
        cfg = json.loads((tmp_path / "r" / "config.json").read_text())
        assert cfg["dataset"] == "stripes-test" and cfg["data_options"] == {"period": 2}
        # no exemplar quadruples: "auto" supervision fell back to the model's unpaired mode
        from exsynth.train import TrainConfig
        assert TrainConfig.from_dict(cfg).resolved_supervision() == "pseudo"
    finally:
        registry.unregister_data_source("stripes-test")


# ---- the upper layers never name a model ----------------------------------------------------------

# the layers that read the registries; the ops/nn layers carry op names (msca_attention, ...)
UPPER = ["checkpoint.py", "registry.py", "inference.py", "evaluate.py", "cli.py", "demo.py", "metrics",
         "imageio.py", "visuals.py", "devices.py", "options.py", "retrieval.py", "train", "data", "losses"]


def _code_names_and_strings(path: Path):
    """Identifiers and string constants of a module, docstrings (paper citations) excluded."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.alias):
            yield getattr(node, "lineno", 0), node.name


def test_no_upper_module_names_a_model():
    root = Path(exsynth.__file__).parent
    names = [n.lower() for n in registry.models()] + ["cocosnet", "msca"]
    files = []
    for entry in UPPER:
        p = root / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    hits = [f"{f.relative_to(root)}:{line}: {text!r}" for f in files for line, text in _code_names_and_strings(f)
            if any(n in text.lower() for n in names)]
    assert not hits, "\n".join(hits)


def test_an_iterable_source_is_started_where_the_run_is(tmp_path, tiny_model):
    """Iterable sources (a video reader) shard themselves; the trainer tells them the step."""
    from torch.utils.data import IterableDataset

    from exsynth.train import TrainConfig, Trainer

    calls = []

    class Stream(IterableDataset):
        def __init__(self, rank, world_size):
            self.rank, self.world_size, self.position = rank, world_size, 0

        def start(self, step, batch_size):
            calls.append((step, batch_size))
            self.position = step * batch_size * self.world_size + self.rank * batch_size

        def __iter__(self):
            g = torch.Generator().manual_seed(self.position)
            while True:
                idx = torch.randint(0, K, (S, S), generator=g)
                lab = F.one_hot(idx, K).permute(2, 0, 1).float()
                yield {"label": lab, "image": lab[:3] * 2 - 1}

    def build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
        return Stream(rank, world_size)

    registry.register_data_source(DataSourceSpec(name="stream-test", build=build, needs_root=False), replace=True)
    try:
        cfg = TrainConfig(model="tinytest", dataset="stream-test", out=str(tmp_path / "r"), size=S, num_classes=K,
                          batch_size=2, steps=2, checkpoint_every=1)
        assert Trainer(cfg, quiet=True).run()["step"] == 2
        resumed = Trainer.resume(tmp_path / "r" / "checkpoints" / "latest.pt", {"steps": 3}, quiet=True)
        assert resumed.run()["step"] == 3
        assert calls == [(0, 2), (2, 2)]
    finally:
        registry.unregister_data_source("stream-test")


def test_flag_parsing_edges(tmp_path, capsys):
    """'none' overrides an Optional option (a preset's, a resumed run's); fixed-length tuples
    take exactly their length; an unknown --model is reported before its flags."""
    out = tmp_path / "r"
    base = ["train", "--allow-random-vgg", "--size", "32", "--num-classes", "4", "--batch-size", "2", "--train-length", "4", "--quiet",
            "--option", "width=4", "--option", "num_up=2", "--option", "max_mult=2", "--out", str(out)]
    assert cli.main(base + ["--steps", "2", "--max-minutes", "30"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--max-minutes", "none", "--quiet"]) == 0
    capsys.readouterr()
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["train_config"]["max_minutes"] is None
    with pytest.raises(SystemExit):
        cli.main(base + ["--betas", "0.5"])
    assert "expected 2 arguments" in capsys.readouterr().err
    msg = _one_error(capsys, ["train", "--model", "nosuch", "--width", "8", "--out", str(tmp_path / "x")])
    assert "'nosuch' is not registered" in msg


def test_spec_of_prefers_the_exact_class(tiny_model):
    import dataclasses

    class Derived(TinyGenerator):
        pass

    sub = registry.register_model(dataclasses.replace(TINY, name="tinysub", generator=Derived, presets={}))
    try:
        assert registry.spec_of(Derived(TinyConfig(label_channels=K))) is sub
        assert registry.spec_of(TinyGenerator(TinyConfig(label_channels=K))) is registry.model_spec("tinytest")
    finally:
        registry.unregister_model("tinysub")


def test_eval_of_a_folder_trained_checkpoint_scores_on_synthetic(tmp_path, capsys):
    root = tmp_path / "data"
    ds = SyntheticExemplarDataset(S * 2, num_classes=K, length=2, split="val")
    for i in range(2):
        write_image(ds[i]["image"], root / "images" / f"{i}.png")
        write_label(ds[i]["label_index"], root / "labels" / f"{i}.png")
    out = tmp_path / "r"
    assert cli.main(["train", "--allow-random-vgg", "--data", str(root), "--size", "32", "--num-classes", str(K), "--steps", "1",
                     "--batch-size", "1", "--quiet", "--option", "width=4", "--option", "num_up=2", "--option",
                     "max_mult=2", "--option", "adaptor_downsample=1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "checkpoints" / "latest.pt"), "--length", "2",
                     "--class-mean-samples", "2"]) == 0
    assert "on the synthetic test split" in capsys.readouterr().out
