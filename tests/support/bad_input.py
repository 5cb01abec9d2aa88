"""The table of bad input, as users and environments give it: grids, flags, stores, credentials,
kubeconfigs and datasets, and what each must be refused with (tests/unit and tests/e2e run it:
the cases that need a real S3 server are the e2e tier's). Every case is refused before anything
is created: the documented exit code, one line that names what to fix, no traceback, and not one
file written anywhere under the test's folder (which is also the working directory, where
default stores and reports would go)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from kbench.cli.main import cli
from kbench.records import dataset_key
from kbench.runs import Run, create_run
from kbench.spec import load_grid
from kbench.storage import open_store, write_json

CONFIG, FAILED = 2, 1  # the README's exit codes: bad input, and a failure that is not


def grid(
    tmp: Path, body: str | bytes, name: str = "g.yaml", head: str = "models: [resnet50]\n"
) -> str:
    path = tmp / name
    path.write_bytes(head.encode() + (body.encode() if isinstance(body, str) else body))
    return str(path)


def cifar(tmp: Path, defaults: str) -> str:
    return grid(tmp, f"datasets: [cifar10]\ndefaults: {{{defaults}}}\n")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig(tmp: Path, server: str = "", text: str = "") -> str:
    path = tmp / "kubeconfig"
    path.write_text(
        text
        or f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]
current-context: ctx
"""
    )
    return str(path)


def imagefolder_with_a_broken_image(tmp: Path) -> str:
    root = tmp / "pictures"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        (root / split / "cat" / "ok.png").write_bytes(_png())
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return str(root)


def imagefolder_with_an_imageless_class(tmp: Path, holds: str | None) -> str:
    """A tree whose train/dog/ holds no image: nothing (`holds` None) or a file of another kind;
    val/dog/ holds one."""
    root = tmp / "pictures"
    for split in ("train", "val"):
        for folder in ("cat", "dog"):
            (root / split / folder).mkdir(parents=True)
        (root / split / "cat" / "ok.png").write_bytes(_png())
    (root / "val" / "dog" / "ok.png").write_bytes(_png())
    if holds:
        (root / "train" / "dog" / holds).write_text("not an image")
    return str(root)


def imagefolder_of_one_image_a_class(tmp: Path) -> str:
    """train/cat/ and val/cat/ with one image each: val/ is the test split, and no hold-out of
    train/ can validate every class."""
    root = tmp / "pictures"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        (root / split / "cat" / "ok.png").write_bytes(_png())
    return str(root)


def imagefolder_with_a_truncated_jpeg(tmp: Path) -> str:
    """A tree whose train/cat/big.jpg passes a header check but is cut short in its data."""
    import io

    from PIL import Image

    root = tmp / "cut"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        (root / split / "cat" / "ok.png").write_bytes(_png())
    buffer = io.BytesIO()
    Image.effect_noise((600, 600), 64).convert("RGB").save(buffer, format="JPEG")
    (root / "train" / "cat" / "big.jpg").write_bytes(buffer.getvalue()[:4000])
    return str(root)


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def a_run(tmp: Path) -> str:
    """A store that already holds run `r1` of the smoke grid."""
    store = open_store(str(tmp / "store"))
    g = load_grid("smoke")
    create_run(store, Run.new("r1", g, "local"), g.pairs)
    return str(tmp / "store")


def staged_s3(request, tmp: Path) -> str:
    """An S3 prefix (the test's SeaweedFS) holding the study's dataset manifests."""
    server = request.getfixturevalue("s3_env")
    uri = server.uri(f"bad-input/{tmp.name}")
    store = open_store(uri)
    for name in load_grid("all").document["datasets"]:
        write_json(store, dataset_key(name), {"name": name, "splits": {}})
    return uri


@dataclass
class Case:
    id: str
    args: Callable[..., list[str]]  # (tmp) or (tmp, request) -> the command line
    code: int
    says: str
    env: Callable[[Path], dict] = lambda tmp: {}
    one_line: bool = True

    @property
    def needs_server(self) -> bool:
        """Its command line takes the test's `request`: for the S3 server (s3_env)."""
        return self.args.__code__.co_argcount == 2


STORE = ["--store", "store"]  # relative: under the test's folder

K8S = ["--backend", "kubernetes", "--image", "img", "--store", "s3://bucket/x"]


def empty_prefix_grid(tmp: Path, request) -> str:
    """A grid whose imagefolder is an S3 prefix (the test's SeaweedFS) that holds nothing."""
    data = request.getfixturevalue("s3_env").uri("none")
    return grid(tmp, f"datasets: [imagefolder]\ndefaults: {{data: '{data}'}}")


def render_with_profile(tmp: Path, profile: str) -> list[str]:
    """`kbench render --dry-run` of the smoke grid with this profile."""
    return [
        "render",
        "--grid",
        "smoke",
        *K8S[2:],
        "--dry-run",
        "--profile",
        grid(tmp, profile, "p.yaml", ""),
    ]


NO_IMDS = {"AWS_EC2_METADATA_DISABLED": "true"}  # no wait for an instance's credentials

NO_S3 = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k"}

CASES = [
    # grids
    Case(
        "unknown grid", lambda t: ["submit", "--grid", "nosuch", *STORE], CONFIG, "no grid 'nosuch'"
    ),
    Case("grid is a folder", lambda t: ["submit", "--grid", str(t), *STORE], CONFIG, "no grid"),
    Case(
        "unknown dataset",
        lambda t: ["submit", "--grid", grid(t, "datasets: [mnist]"), *STORE],
        CONFIG,
        "datasets: unknown name 'mnist'",
    ),
    Case(
        "invalid YAML",
        lambda t: ["submit", "--grid", grid(t, "datasets: [cifar10"), *STORE],
        CONFIG,
        "not valid YAML",
    ),
    Case(
        "grid not UTF-8",
        lambda t: ["submit", "--grid", grid(t, b"datasets: [cifar10]\n# \xff\xfe\n"), *STORE],
        CONFIG,
        "not UTF-8 text",
    ),
    Case(
        "repeated key",
        lambda t: ["submit", "--grid", grid(t, "datasets: [cifar10]\ndatasets: [dtd]"), *STORE],
        CONFIG,
        "key 'datasets' appears twice",
    ),
    Case(
        "repeated config key",
        lambda t: ["submit", "--grid", cifar(t, "lr: 0.1, lr: 0.2"), *STORE],
        CONFIG,
        "key 'lr' appears twice",
    ),
    Case(
        "unknown top-level key",
        lambda t: ["submit", "--grid", grid(t, "datasets: [cifar10]\nepochs: 3"), *STORE],
        CONFIG,
        "unknown key 'epochs'",
    ),
    Case(
        "unknown config key",
        lambda t: ["submit", "--grid", cifar(t, "learning_rate: 0.1"), *STORE],
        CONFIG,
        "unknown key 'learning_rate'",
    ),
    Case(
        "wrong type",
        lambda t: ["submit", "--grid", cifar(t, "epochs: x"), *STORE],
        CONFIG,
        "epochs: expected an integer",
    ),
    Case(
        "unknown method",
        lambda t: [
            "submit",
            "--grid",
            grid(t, "datasets: [cifar10]\nmethods: [fine-tuning]"),
            *STORE,
        ],
        CONFIG,
        "methods: expected a list of distinct methods of fine-tune, linear-probe, lp-ft",
    ),
    Case(
        "a sweep of a linear probe",
        lambda t: [
            "submit",
            "--grid",
            grid(
                t, "datasets: [cifar10]\nmethods: [linear-probe]\ndefaults: {sweep: {lr: [1, 2]}}"
            ),
            *STORE,
        ],  # fmt: skip
        CONFIG,
        "a sweep tunes fine-tuning only",
    ),
    Case(
        "empty sweep list",
        lambda t: ["submit", "--grid", cifar(t, "sweep: {lr: []}"), *STORE],
        CONFIG,
        "sweep.lr: expected a non-empty list of numbers",
    ),
    Case(
        "sweep of an unknown key",
        lambda t: ["submit", "--grid", cifar(t, "sweep: {learning_rate: [0.1, 0.2]}"), *STORE],
        CONFIG,
        "sweep.learning_rate: not a key a sweep varies",
    ),
    Case(
        "sweep of a key that is not numeric",
        lambda t: ["submit", "--grid", cifar(t, "sweep: {optimizer: [sgd, adamw]}"), *STORE],
        CONFIG,
        "sweep.optimizer: not a key a sweep varies",
    ),
    Case(
        "sweep value the key refuses",
        lambda t: ["submit", "--grid", cifar(t, "sweep: {lr: [0.1, -0.1]}"), *STORE],
        CONFIG,
        "pair cifar10_resnet50_trial2: lr: must be positive, got -0.1",
    ),
    Case(
        "sweep of one combination",
        lambda t: ["submit", "--grid", cifar(t, "sweep: {lr: [0.1]}"), *STORE],
        CONFIG,
        "sweep: one combination only",
    ),
    Case(
        "sweep choosing on the test split",
        lambda t: [
            "submit",
            "--grid",
            cifar(t, "select_on: test, sweep: {lr: [0.1, 0.2]}"),
            *STORE,
        ],
        CONFIG,
        "a sweep chooses on validation",
    ),
    Case(
        "rung after the last epoch",
        lambda t: [
            "submit",
            "--grid",
            grid(
                t,
                "datasets: [cifar10]\ndefaults: {sweep: {lr: [0.1, 0.2]}}\nhalving: {rungs: [30]}",
            ),
            *STORE,
        ],  # fmt: skip
        CONFIG,
        "halving.rungs: 30 is not before the end of training",
    ),
    Case(
        "infinite lr",
        lambda t: ["submit", "--grid", cifar(t, "lr: .inf"), *STORE],
        CONFIG,
        "lr: expected a finite number",
    ),
    Case(
        "NaN lr",
        lambda t: ["submit", "--grid", cifar(t, "lr: .nan"), *STORE],
        CONFIG,
        "lr: expected a finite number",
    ),
    Case(
        "negative weight decay",
        lambda t: ["submit", "--grid", cifar(t, "weight_decay: -0.1"), *STORE],
        CONFIG,
        "weight_decay: must be >= 0",
    ),
    Case(
        "warmup over 1",
        lambda t: ["submit", "--grid", cifar(t, "warmup: 1.5"), *STORE],
        CONFIG,
        "warmup: must be a fraction in [0, 1)",
    ),
    Case(
        "batch larger than the split",
        lambda t: ["submit", "--grid", cifar(t, "batch_size: 60000"), *STORE],
        CONFIG,
        "batch_size: 60000 is larger than the 50000 training images of cifar10",
    ),
    Case(
        "batch larger than train_limit",
        lambda t: ["submit", "--grid", cifar(t, "batch_size: 64, train_limit: 10"), *STORE],
        CONFIG,
        "larger than the 10 (train_limit) training images",
    ),
    Case(
        "unknown eval split",
        lambda t: ["submit", "--grid", cifar(t, "eval_split: val"), *STORE],
        CONFIG,
        "eval_split: cifar10 has test, got 'val'",
    ),
    Case(
        "override of no pair",
        lambda t: [
            "submit",
            "--grid",
            grid(t, "datasets: [cifar10]\noverrides: {dtd_resnet50: {epochs: 1}}"),
            *STORE,
        ],
        CONFIG,
        "overrides.dtd_resnet50: not a pair of this grid",
    ),
    Case(
        "template without {}",
        lambda t: [
            "submit",
            "--grid",
            grid(
                t,
                "datasets: [cifar10]\ndefaults: {templates: [a photo]}",
                head="models: [clip-tiny]\n",
            ),
            *STORE,
        ],
        CONFIG,
        "every template needs {} for the class name",
    ),
    Case(
        "imagefolder that does not exist",
        lambda t: [
            "submit",
            "--grid",
            grid(t, "datasets: [imagefolder]\ndefaults: {data: nowhere}"),
            *STORE,
        ],
        CONFIG,
        "nowhere does not exist",
    ),
    Case(
        "imagefolder prefix with nothing under it",
        lambda t, r: ["submit", "--grid", empty_prefix_grid(t, r), *STORE],
        CONFIG,
        "/none: upload train/<class>/<image>",
    ),
    Case(
        "a JPEG cut short, staged reduced",
        lambda t: [
            "data",
            "stage",
            "imagefolder",
            "--root",
            imagefolder_with_a_truncated_jpeg(t),
            "--max-short-side",
            "448",
            *STORE,
        ],
        CONFIG,
        "cut/train/cat/big.jpg: not an image kbench can read (",
    ),
    Case(
        "imagefolder with an empty class folder, staged",
        lambda t: [
            "data",
            "stage",
            "imagefolder",
            "--root",
            imagefolder_with_an_imageless_class(t, None),
            *STORE,
        ],
        CONFIG,
        "pictures/train/dog/ holds no image (.jpg, .jpeg, .png",
    ),
    Case(
        "imagefolder with a class folder of no image file, submitted",
        lambda t: [
            "submit",
            "--grid",
            grid(
                t,
                "datasets: [imagefolder]\ndefaults: {data: "
                f"'{imagefolder_with_an_imageless_class(t, 'notes.txt')}'}}",
            ),
            *STORE,
        ],
        CONFIG,
        "pictures/train/dog/ holds no image (.jpg, .jpeg, .png",
    ),
    Case(
        "imagefolder with a class of one image, to choose on a hold-out of it",
        lambda t: [
            "submit",
            "--grid",
            grid(
                t,
                "datasets: [imagefolder]\ndefaults: {data: "
                f"'{imagefolder_of_one_image_a_class(t)}'}}",
            ),
            *STORE,
        ],
        CONFIG,
        "pictures/train/cat/ has one image, and a validation split is held out of every class",
    ),
    # flags
    Case(
        "bad run id",
        lambda t: ["submit", "--grid", "smoke", "--run-id", "Bad_Name", *STORE],
        CONFIG,
        "bad run id 'Bad_Name'",
    ),
    Case(
        "run id taken",
        lambda t: ["submit", "--grid", "smoke", "--run-id", "r1", "--store", a_run(t)],
        CONFIG,
        "run 'r1' already exists",
    ),
    Case(
        "zero parallel",
        lambda t: ["submit", "--grid", "smoke", "--parallel", "0", *STORE],
        CONFIG,
        "Invalid value for '--parallel'",
        one_line=False,  # click's usage line comes first
    ),
    Case(
        "batch that does not split over the processes",
        lambda t: ["submit", "--grid", "smoke", "--nproc-per-node", "3", *STORE],
        CONFIG,
        "does not split evenly over 3 training processes",
    ),
    Case(
        "unknown backend",
        lambda t: ["submit", "--grid", "smoke", "--backend", "slurm", *STORE],
        CONFIG,
        "Invalid value for '--backend'",
        one_line=False,
    ),
    Case(
        "missing profile",
        lambda t: ["submit", "--grid", "smoke", *K8S, "--profile", "nope.yaml", "--dry-run"],
        CONFIG,
        "profile nope.yaml: no such file",
    ),
    Case(
        "profile with a bad memory size",
        lambda t: [
            "submit",
            "--grid",
            "smoke",
            *K8S,
            "--profile",
            grid(t, "memory: lots", "p.yaml", ""),
            "--dry-run",
        ],
        CONFIG,
        "memory: 'lots' is not a Kubernetes quantity",
    ),
    Case(
        "profile with an unknown key",
        lambda t: ["submit", "--grid", "smoke", *K8S, "--profile", grid(t, "gpu: 8", "p.yaml", "")],
        CONFIG,
        "unknown key 'gpu'",
    ),
    Case(
        "a namespace that is not a DNS label",
        lambda t: ["submit", "--grid", "smoke", *K8S, "-n", "ML_Team", "--dry-run"],
        CONFIG,
        "namespace: 'ML_Team' is not a DNS label",
    ),
    Case(
        "an image reference with a space",
        lambda t: ["submit", "--grid", "smoke", *K8S[:2], "--image", "my image", *K8S[4:]],
        CONFIG,
        "image: 'my image' is not an image reference",
    ),
    Case(
        "a label value with a space",
        lambda t: render_with_profile(t, "labels: {team: ml research}"),
        CONFIG,
        "labels.team: 'ml research' is not a label value",
    ),
    Case(
        "an env that overrides kbench's own",
        lambda t: render_with_profile(t, "env: {KBENCH_STORE: s3://elsewhere}"),
        CONFIG,
        "env: 'KBENCH_STORE' is kbench's own",
    ),
    Case(
        "status of no such run",
        lambda t: ["status", "--run", "nope", "--store", a_run(t)],
        CONFIG,
        "no run 'nope'",
    ),
    Case(
        "logs of no such pair",
        lambda t: ["logs", "mnist_resnet50", "--store", a_run(t)],
        CONFIG,
        "has no pair 'mnist_resnet50'",
    ),
    # stores and credentials
    Case(
        "unsupported store",
        lambda t: ["status", "--store", "gs://b/x"],
        CONFIG,
        "unsupported store 'gs://b/x'",
    ),
    Case(
        "store without a bucket",
        lambda t: ["status", "--store", "s3://"],
        CONFIG,
        "names no bucket",
    ),
    Case(
        "store path is a file",
        lambda t: ["submit", "--grid", "smoke", "--store", grid(t, "", "afile", "")],
        CONFIG,
        "is a file: give a directory",
    ),
    Case(
        "malformed AWS_ENDPOINT_URL",
        lambda t: ["status", "--store", "s3://bucket/x"],
        CONFIG,
        "cannot configure S3 for s3://bucket/x",
        env=lambda t: {"AWS_ENDPOINT_URL": "not a url"},
    ),
    Case(
        "bad KBENCH_TIMEOUT_S",
        lambda t: ["status", "--store", "s3://bucket/x"],
        CONFIG,
        "KBENCH_TIMEOUT_S='soon': expected a number of seconds",
        env=lambda t: {"KBENCH_TIMEOUT_S": "soon"},
    ),
    Case(
        "unreachable S3 endpoint",
        lambda t: ["status", "--store", "s3://bucket/x"],
        FAILED,
        "cannot reach the S3 endpoint http://127.0.0.1:{port}",
        env=lambda t: {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"},
    ),
    Case(
        "access key without its secret",
        lambda t: ["status", "--store", "s3://bucket/x"],
        CONFIG,
        "incomplete AWS credentials for s3://bucket/x",
        env=lambda t: {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": None},
    ),
    Case(
        "no credentials at all",
        lambda t: ["status", "--store", "s3://bucket/x"],
        CONFIG,
        "no AWS credentials for s3://bucket/x",
        env=lambda t: {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, **NO_IMDS},
    ),
    Case(
        "wrong secret key",
        lambda t, r: ["status", "--store", r.getfixturevalue("s3_env").uri("x")],
        FAILED,
        "refused access",
        env=lambda t: {"AWS_SECRET_ACCESS_KEY": "wrong"},
    ),
    # kubeconfigs
    Case(
        "no kubeconfig",
        lambda t: ["submit", "--grid", "smoke", *K8S],
        CONFIG,
        "no usable kubeconfig",
        env=lambda t: {"KUBECONFIG": str(t / "missing"), **NO_S3},
    ),
    Case(
        "kubeconfig not YAML",
        lambda t: ["submit", "--grid", "smoke", *K8S],
        CONFIG,
        "no usable kubeconfig",
        env=lambda t: {"KUBECONFIG": kubeconfig(t, text="clusters: [{"), **NO_S3},
    ),
    Case(
        "unknown context",
        lambda t: ["submit", "--grid", "smoke", *K8S, "--context", "elsewhere"],
        CONFIG,
        "no usable kubeconfig",
        env=lambda t: {"KUBECONFIG": kubeconfig(t, "https://127.0.0.1:1"), **NO_S3},
    ),
    Case(
        "unreachable API server",
        lambda t, r: ["submit", "--grid", "smoke", *K8S[:-1], staged_s3(r, t)],
        FAILED,
        "cannot reach the Kubernetes API server",
        env=lambda t: {"KUBECONFIG": kubeconfig(t, f"http://127.0.0.1:{closed_port()}")},
    ),
    Case(
        "doctor with an unreachable API server",
        lambda t: ["doctor", "--image", "img", "--store", "s3://bucket/x"],
        FAILED,
        "cannot reach the API server",
        env=lambda t: {"KUBECONFIG": kubeconfig(t, f"http://127.0.0.1:{closed_port()}"), **NO_S3},
        one_line=False,  # doctor prints every check
    ),
    # datasets
    Case(
        "stage an unknown dataset",
        lambda t: ["data", "stage", "mnist", *STORE],
        CONFIG,
        "unknown dataset 'mnist'",
    ),
    Case(
        "stage an image that does not decode",
        lambda t: [
            "data",
            "stage",
            "imagefolder",
            "--root",
            imagefolder_with_a_broken_image(t),
            *STORE,
        ],
        CONFIG,
        "broken.jpg: not an image kbench can read",
    ),
]


def _files(folder: Path) -> dict[str, int]:
    """Every file and folder with its mtime, but the test's TMPDIR (a process's own temporary
    files, torch's compile cache), which is not kbench's output."""
    scratch = folder / "scratch"
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p != scratch and scratch not in p.parents
    }


def check_refused(case: Case, tmp_path: Path, monkeypatch, request) -> None:
    """Run the case's command in a clean environment and hold it to the rules above."""
    monkeypatch.chdir(tmp_path)
    unset = (
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "KUBECONFIG",
        "KBENCH_STORE",
        "KUBERNETES_SERVICE_HOST",
    )
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("KBENCH_TIMEOUT_S", "2")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config, no ~/.aws
    args = case.args(tmp_path, request) if case.needs_server else case.args(tmp_path)
    env = case.env(tmp_path)
    before = _files(tmp_path)

    result = CliRunner().invoke(cli, args, env=env)

    out = result.output
    assert result.exit_code == case.code, out
    says = case.says.replace("{port}", env.get("AWS_ENDPOINT_URL", "").rpartition(":")[2])
    assert says in out
    assert "Traceback" not in out and isinstance(result.exception, SystemExit)
    assert "--debug" not in out  # not the catch-all for errors nobody named
    if case.one_line:
        assert out.startswith("Error: ") and out.count("\n") == 1, out
    assert _files(tmp_path) == before  # nothing written, nowhere
