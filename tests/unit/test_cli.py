"""The command line, as a user meets it: help, bad input, empty stores."""

from __future__ import annotations

import json

import pytest
import yaml

from kbench.runs import check_run_id


@pytest.mark.parametrize("command", ["submit", "status", "collect", "runs", "logs", "cancel"])
def test_every_command_has_help(command, kbench):
    result = kbench(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {command}") or "Usage:" in result.output
    assert "--store" in result.output


def test_top_level_help_shows_the_three_main_commands(kbench):
    result = kbench("--help")
    assert result.exit_code == 0
    for line in ["kbench submit --grid", "kbench status", "kbench collect"]:
        assert line in result.output


def _bad_grid(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return str(path)


BAD_INPUT = [
    (lambda tmp: "nosuch", "no grid 'nosuch': give a built-in name"),
    (
        lambda tmp: _bad_grid(tmp, "datasets: [mnist]\nmodels: [resnet50]"),
        "datasets: unknown name 'mnist'",
    ),
    (lambda tmp: _bad_grid(tmp, "datasets: [cifar10\nmodels: [resnet50]"), "not valid YAML"),
    (
        lambda tmp: _bad_grid(tmp, "datasets: [cifar10]\nmodels: {resnet50: {epochs: x}}"),
        "epochs: expected an integer",
    ),
]


@pytest.mark.parametrize(("grid", "message"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_runs_nothing(tmp_path, grid, message, kbench):
    store = tmp_path / "store"
    result = kbench("submit", "--grid", grid(tmp_path), "--store", str(store))
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an unexpected error
    assert not store.exists()  # nothing was recorded, nothing ran


def test_bad_run_id_is_refused(tmp_path, kbench):
    result = kbench("submit", "--grid", "smoke", "--run-id", "Bad_Name", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert "bad run id 'Bad_Name'" in result.output


@pytest.mark.parametrize("output", ["yaml", "json"])
def test_dry_run_prints_resolved_configs_and_runs_nothing(tmp_path, output, kbench):
    store = tmp_path / "store"
    result = kbench("submit", "--grid", "all", "--dry-run", "-o", output, "--store", str(store))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout) if output == "json" else yaml.safe_load(result.stdout)
    assert len(doc["pairs"]) == 18
    assert doc["pairs"][0]["config"]["dataset"] == "cifar10"
    assert not store.exists()


@pytest.mark.parametrize("command", ["status", "collect", "logs x", "cancel --all"])
def test_empty_store_says_how_to_start(tmp_path, command, kbench):
    result = kbench(*command.split(), "--store", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "no runs in" in result.output and "kbench submit" in result.output
    assert result.output.count("\n") == 1


def test_store_from_environment(tmp_path, kbench):
    result = kbench("runs", env={"KBENCH_STORE": str(tmp_path / "nothing")})
    assert result.exit_code == 0
    assert result.output.split() == ["RUN", "GRID", "BACKEND", "PAIRS", "CREATED"]


def test_local_logs_previous_attempt_and_tail(tmp_path, kbench):
    """A resumed local pair keeps one log; --previous is the attempt before the last resume,
    --tail its last lines."""
    from kbench import records
    from kbench.backends.local import RESUMED
    from kbench.runs import Run, create_run
    from kbench.spec import load_grid
    from kbench.storage import open_store

    store = open_store(str(tmp_path / "store"))
    grid = load_grid("smoke")
    create_run(store, Run.new("r", grid, "local"), grid.pairs)
    pair = grid.pairs[0].name
    log = "first 1\nfirst 2\nfirst 3" + RESUMED + "2026-11-28T00:00:00+00:00 ====\nsecond 1\n"
    store.write(records.pair_key("r", pair, "train.log"), log.encode())
    args = ["logs", pair, "--store", store.uri]
    assert kbench(*args).output == log
    assert kbench(*args, "--previous").output == "first 1\nfirst 2\nfirst 3"
    assert kbench(*args, "--previous", "--tail", "2").output == "first 2\nfirst 3"
    assert kbench(*args, "--tail", "1").output == "second 1\n"
    other = kbench("logs", grid.pairs[1].name, "--store", store.uri, "--previous")
    assert other.exit_code == 1 and "no log for" in other.output
    assert kbench(*args, "--node", "1").exit_code == 2  # a local pair has one node


@pytest.mark.parametrize(
    ("name", "starts"),
    [
        ("x" * 60, "x" * 24 + "-"),
        ("Mon étude : CLIP contre ResNet, sur mes images", "mon-tude-clip-contre-res-"),
        ("a" * 23 + "-b", "a" * 23 + "-2"),  # no '-' left before the time
        ("---", "run-"),
    ],
)
def test_a_grid_of_any_name_gets_a_default_run_id_that_keeps_the_rule(
    name, starts, tmp_path, kbench
):
    """The default run id (<grid>-<date>-<time>) of a grid with a long or odd name is still a
    run id: the plan that `submit` would send names it."""
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: {json.dumps(name)}\ndatasets: [synthetic]\nmodels: [clip-tiny]\n")
    result = kbench("submit", "--grid", str(grid), "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    run_id = plan["run_id"]
    assert check_run_id(run_id) == run_id and len(run_id) <= 40
    assert run_id.startswith(starts) and plan["grid"] == name
