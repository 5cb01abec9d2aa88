"""The pieces the training loop is built from: data, models, optimizer and schedule."""

from __future__ import annotations

import math

import pytest
import torch

from kbench.errors import UnreadableImage
from kbench.jobs import datasets, models
from kbench.jobs.optim import build_optimizer, build_scheduler, warmup_steps
from kbench.jobs.synthetic import SyntheticShapes
from kbench.registry import DATASETS, MODELS, model_info, prompts
from kbench.spec import load_grid

CPU = torch.device("cpu")


def smoke_config(model: str, **changes):
    config = load_grid("smoke").pair(f"synthetic_{model}").config
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_registries_of_both_sides_agree():
    assert set(models.BUILDERS) == set(MODELS)
    assert set(datasets.BUILDERS) == set(DATASETS)


def test_synthetic_data_is_deterministic_balanced_and_named():
    a, b = SyntheticShapes("train", seed=3), SyntheticShapes("train", seed=3)
    assert a[7][0].tobytes() == b[7][0].tobytes()
    assert a[7][0].tobytes() != SyntheticShapes("train", seed=4)[7][0].tobytes()
    labels = [a[i][1] for i in range(100)]
    assert all(labels.count(c) == 10 for c in range(10))
    assert a.classes == prompts("synthetic")[0] and a.classes[0] == "red circle"


def test_limit_takes_the_same_subset_everywhere():
    config = smoke_config("resnet-tiny", train_limit=100, eval_limit=30)
    first = datasets.build_splits(config, model_info("resnet-tiny"))
    second = datasets.build_splits(config, model_info("resnet-tiny"))
    assert (len(first.train), len(first.eval)) == (100, 30)
    assert first.train.indices == second.train.indices
    # Another seed (one of a grid's `seeds`) trains and is scored on the same samples.
    other = datasets.build_splits(
        smoke_config("resnet-tiny", train_limit=100, eval_limit=30, seed=3),
        model_info("resnet-tiny"),
    )
    assert (other.train.indices, other.eval.indices) == (first.train.indices, first.eval.indices)
    image, _ = other.eval[0]
    assert torch.equal(image, first.eval[0][0])  # the same synthetic images, too


@pytest.mark.parametrize("dataset", ["cifar10", "fmow"])  # a torchvision and a WILDS loader
def test_missing_local_copy_of_a_dataset_says_what_to_set(dataset, monkeypatch, tmp_path):
    from kbench.errors import ConfigError

    monkeypatch.setenv("KBENCH_DATA_ROOT", str(tmp_path))
    config = load_grid("all").pair(f"{dataset}_resnet50").config
    message = f"no local copy of {dataset} under .* set KBENCH_DATA_ROOT"
    with pytest.raises(ConfigError, match=message):
        datasets.build_splits(config, model_info("resnet50"))


def test_clip_zero_shot_head():
    classes, templates = prompts("synthetic")
    model = models.build_model(smoke_config("clip-tiny"), classes, templates, CPU)
    weight = model.head.weight.detach()
    assert weight.shape == (len(classes), 64)
    assert torch.all(model.head.bias == 0)
    norms = weight.norm(dim=1)
    # every row: a unit vector times the logit scale (1 / 0.07 at init)
    assert torch.allclose(norms, torch.full_like(norms, 1 / 0.07), rtol=1e-4)
    # the text tower is gone
    assert not any("token_embedding" in name for name, _ in model.named_parameters())
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, len(classes))


def test_resnet_head_is_a_fresh_xavier_linear():
    model = models.build_model(smoke_config("resnet-tiny"), ["a", "b", "c"], [], CPU)
    assert isinstance(model.encoder.fc, torch.nn.Identity)
    assert model.head.weight.shape == (3, 512)
    bound = math.sqrt(6 / (512 + 3))  # xavier-uniform's bound
    assert model.head.weight.abs().max() <= bound and torch.all(model.head.bias == 0)


def test_optimizer_groups_carry_backbone_and_head_rates():
    config = smoke_config("resnet-tiny", lr=0.001, head_lr=0.01, weight_decay=1e-4)
    model = models.build_model(config, ["a", "b"], [], CPU)
    optimizer = build_optimizer(config, model, CPU)
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, head = optimizer.param_groups
    assert (backbone["name"], backbone["lr"], head["name"], head["lr"]) == (
        "backbone",
        0.001,
        "head",
        0.01,
    )
    assert backbone["momentum"] == 0.9 and head["weight_decay"] == 1e-4
    assert len(head["params"]) == 2  # weight and bias of the head, nothing else


def test_warmup_is_a_fraction_or_a_count_kept_as_given(capsys):
    config = smoke_config("clip-tiny", warmup=0.1)
    assert warmup_steps(config, total_steps=30) == 3  # Flowers102-sized runs still warm up briefly
    config.warmup_steps = 500  # WiSE-FT's fixed count, on a 30-step run: as its cosine_lr does
    assert warmup_steps(config, total_steps=30) == 500
    assert "warmup_steps=500 exceeds the run's 30 steps" in capsys.readouterr().out


def test_schedule_warms_up_then_decays_to_zero():
    config = smoke_config("clip-tiny", lr=1.0, head_lr=None, warmup=0.2, schedule="cosine")
    model = models.build_model(config, ["a", "b"], ["{}"], CPU)
    optimizer = build_optimizer(config, model, CPU)
    scheduler = build_scheduler(config, optimizer, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:2] == [0.5, 1.0]  # two warmup steps
    assert rates[2] == 1.0 and all(a > b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_a_stale_cached_checkpoint_of_a_same_named_run_is_not_resumed(tmp_path):
    """The node cache (/tmp/kbench/<run>/<pair>) outlives a run: a run re-created under the
    same name must resume from its own checkpoint, not the file an earlier run left there."""
    from kbench.jobs import checkpoint
    from kbench.storage import open_store

    cache = str(tmp_path / "cache")
    for attempt in ("earlier", "later"):
        store = open_store(str(tmp_path / attempt))  # same run and pair names, fresh store
        checkpoint.save(store, "run", "pair", {"epoch": 2, "who": attempt})
        assert checkpoint.load_latest(store, "run", "pair", cache)["who"] == attempt


@pytest.mark.parametrize(
    ("cpus", "processes", "workers"),
    [("16", "4", 3), ("8", "1", 7), ("2", "2", 0), ("1.5", "1", 0)],
)
def test_loader_workers_are_the_pods_cpus_share_less_one(cpus, processes, workers, monkeypatch):
    from kbench.jobs.loaders import loader_workers

    monkeypatch.setenv("KBENCH_CPUS", cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert loader_workers() == workers


def test_pod_0_of_an_indexed_job_hosts_the_rendezvous_store(monkeypatch):
    """Decided by the completion index, not by resolving the endpoint's DNS name."""
    from kbench.jobs.launch import rendezvous_conf

    conf = "join_timeout=900,read_timeout=900"
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert rendezvous_conf("c10d", conf) == conf + ",is_host=true"
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert rendezvous_conf("c10d", conf) == conf + ",is_host=false"
    assert rendezvous_conf("static", conf) == conf
    assert rendezvous_conf("c10d", "is_host=false") == "is_host=false"  # the user's word wins
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    assert rendezvous_conf("c10d", conf) == conf  # not in a pod: torch decides, as before


# What gloo raised in a process whose peer's pod was SIGKILLed (torch 2.14.1, two torchrun
# agents on this machine; tests/e2e/test_k8s_contract.py does it to a rendered pair).
GLOO_PEER_GONE = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
    "[127.0.0.1]:12513: Connection reset by peer. This is typically caused by a remote worker "
    "hanging or bugs in the application."
)


def test_a_lost_peer_is_told_from_a_process_own_failure():
    from torch.distributed import DistNetworkError

    from kbench.jobs.peers import lost_peer

    assert lost_peer(RuntimeError(GLOO_PEER_GONE))
    assert lost_peer(DistNetworkError("failed to recv, got 0 bytes"))
    assert not lost_peer(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not lost_peer(ValueError("connection reset by peer"))  # not from torch.distributed


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ({2, 3}, 2),  # a bad config wins: no retry helps
        ({1, 3}, 1),  # one process crashed on its own: counted
        ({3, 143}, 3),  # lost a peer; torchrun stopped the other process
        ({-9}, 1),
        ({143}, 1),  # stopped without a word of why: counted as before
    ],
)
def test_a_pod_exits_as_its_failed_workers_say(codes, expected, tmp_path):
    from kbench.jobs.launch import exit_code

    args = ["--store", str(tmp_path), "--run-id", "r", "--pair", "p"]
    assert exit_code(codes, args) == expected


def test_a_lost_peer_is_free_only_while_training_moves_on(tmp_path, monkeypatch, capsys):
    """The fourth loss since the same checkpoint counts; a new checkpoint frees it again."""
    from kbench import records
    from kbench.jobs.checkpoint import POINTER
    from kbench.jobs.launch import exit_code
    from kbench.jobs.peers import FREE_PEER_LOSSES
    from kbench.storage import open_store, read_json, write_json

    store = open_store(str(tmp_path))
    args = ["--store", str(tmp_path), "--run-id", "r", "--pair", "p"]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert [exit_code({3}, args) for _ in range(FREE_PEER_LOSSES + 1)] == [3, 3, 3, 1]
    assert "lost a peer 4 times since checkpoint 0: counted" in capsys.readouterr().err
    write_json(store, records.pair_key("r", "p", POINTER), {"epoch": 2, "key": "k", "id": "i"})
    assert exit_code({3}, args) == 3
    mark = read_json(store, records.pair_key("r", "p", "peer-lost-node-1.json"))
    assert mark == {"epoch": 2, "count": 1}
    # The store is not trusted: a mark that is not one is refused in one line, and counts.
    store.write(records.pair_key("r", "p", "peer-lost-node-1.json"), b'{"epoch": "2"}')
    assert exit_code({3}, args) == 1
    assert "is not a kbench peer-lost mark" in capsys.readouterr().err


def test_the_eval_split_is_decoded_once_when_it_fits():
    """The second evaluation reads nothing from the dataset and sees the same batches; a split
    over the budget, or a first pass cut short, is read again every time."""
    from torch.utils.data import DataLoader, Dataset

    from kbench.jobs.eval_cache import Budget, EvalBatches

    class Counted(Dataset):
        reads = 0

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            Counted.reads += 1
            return torch.full((3, 4, 4), i, dtype=torch.uint8), i

    cpu = torch.device("cpu")
    loader = DataLoader(Counted(), batch_size=4)
    batches = EvalBatches(loader, cpu, budget=10_000)
    first = [tuple(t.clone() for t in b) for b in batches]
    assert Counted.reads == 10
    second = list(batches)
    assert Counted.reads == 10  # from memory
    assert all(
        torch.equal(a, b)
        for x, y in zip(first, second, strict=True)
        for a, b in zip(x, y, strict=True)
    )

    small = EvalBatches(loader, cpu, budget=3 * 48)  # 3 images of 48 bytes: the split is 10
    for _ in range(2):
        assert sum(len(b[1]) for b in small) == 10
    assert Counted.reads == 30 and small.cached is None

    cut = EvalBatches(loader, cpu, budget=10_000)
    next(iter(cut))  # an evaluation that stopped after one batch
    assert cut.cached is None
    assert sum(len(b[1]) for b in cut) == 10 and cut.cached is not None

    # The test and validation splits share one budget: what one keeps, the other cannot
    shared = Budget(10 * 56 + 5 * 56)  # the split, and half of it again (56 bytes a sample)
    test, val = EvalBatches(loader, cpu, shared), EvalBatches(loader, cpu, shared)
    list(test), list(val)
    assert test.cached is not None and val.cached is None and shared.bytes == 5 * 56


@pytest.mark.parametrize("budget", [0, 56, 559, 560, 10_000])
def test_every_evaluation_sees_the_whole_split_once_whatever_the_cache_budget(budget):
    """Ten samples of 56 bytes (a 3x4x4 uint8 image and an int64 label) in batches of 4: a
    budget under the split's 560 bytes keeps nothing, and every pass reads the split again; one
    that holds it reads it once. Either way each pass yields every sample once, in order, with
    its own image: never a part of a pass kept and served as the whole."""
    from torch.utils.data import DataLoader, Dataset

    from kbench.jobs.eval_cache import EvalBatches

    class Counted(Dataset):
        def __init__(self) -> None:
            self.reads = 0

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            self.reads += 1
            return torch.full((3, 4, 4), i, dtype=torch.uint8), i

    dataset = Counted()
    batches = EvalBatches(DataLoader(dataset, batch_size=4), torch.device("cpu"), budget=budget)
    for _ in range(3):
        seen = [
            (int(image.unique()), int(label))
            for images, labels in batches
            for image, label in zip(images, labels, strict=True)
        ]
        assert seen == [(i, i) for i in range(10)]
    assert dataset.reads == (10 if budget >= 560 else 30)


def test_shards_decode_every_kind_of_jpeg_as_pil_would(tmp_path):
    """JPEGs (RGB, greyscale, CMYK) go straight to uint8 tensors through libjpeg-turbo; what is
    no JPEG goes through PIL; a broken one names its shard."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from kbench.jobs.shards import ShardDataset

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    picture = Image.fromarray(smooth)

    def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=90)
        return buffer.getvalue()

    samples = {
        "rgb": encoded(picture),
        "gray": encoded(picture.convert("L")),
        "cmyk": encoded(picture.convert("CMYK")),
        "png-named-jpg": encoded(picture, "PNG"),
        "truncated": encoded(picture)[:300],
    }
    path = tmp_path / "train-00000.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index, data in enumerate(samples.values()):
            for suffix, payload in (("jpg", data), ("cls", b"0")):
                info = tarfile.TarInfo(f"{index:08d}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    shard = ShardDataset([path])

    for index, (name, data) in enumerate(samples.items()):
        if name == "truncated":
            named = f"image 00000004.jpg of shard {path}: not an image kbench can read"
            with pytest.raises(UnreadableImage, match=named):
                shard[index]
            continue
        image, label = shard[index]
        pixels = np.asarray(image) if isinstance(image, Image.Image) else image.permute(1, 2, 0)
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert pixels.shape == expected.shape == (48, 64, 3), name
        # The same libjpeg-turbo as Pillow's wheels: the same pixels (2 levels allowed between
        # versions of it).
        assert np.abs(np.asarray(pixels, dtype=np.int16) - expected).max() <= 2, name
        assert isinstance(image, torch.Tensor) == (name != "png-named-jpg"), name


def test_a_pods_kept_log_is_its_head_and_tail_within_bounds(monkeypatch):
    from kbench.jobs import pod_log

    monkeypatch.setattr(pod_log, "HEAD_BYTES", 10)
    monkeypatch.setattr(pod_log, "TAIL_BYTES", 20)
    kept = pod_log.Kept()
    kept.add(b"0123456789start")
    assert kept.text() == b"0123456789start"  # nothing dropped yet
    for i in range(10):
        kept.add(f"line {i}\n".encode())
    text = kept.text()
    assert text.startswith(b"0123456789\n[... ") and text.endswith(b"line 8\nline 9\n")
    assert len(text) - len(b"0123456789") - len(b"\n[... 55 bytes left out ...]\n") == 20
