"""Sharded `scaler tune` and `scaler bench`: shards partition one deterministic work list, the
merge equals a single run, and a broken shard set is refused naming the shard and the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation.command import ShardLog
from scaler.simulation.report import SimulationReport
from scaler.simulation.scenario import prepare
from scaler.simulation.shards import (
    SHARD_INDEX_ENV,
    MissingShardsError,
    Shard,
    ShardError,
    parse_shard,
    read_shards,
    write_shard,
)
from scaler.simulation.tune import candidate_list, merge_tune, tune_shard
from tests.builders import ROOT
from tests.simulation.scenario_builders import write_tiny_scenario

runner = CliRunner()

MODEL = "tinyllama"
CANDIDATES = 9  # N = 7 then gives shards of two candidates and of one
TUNE = ["--model", MODEL, "--candidates", str(CANDIDATES), "--slo-target", "0.9"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-minute two-model scenario (a candidate runs in ~0.1 s) with its trace."""
    return write_tiny_scenario(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def single(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """The single-machine run (two worker processes): its frontier table and policy bytes."""
    output = tmp_path_factory.mktemp("single") / "tuned.yaml"
    result = runner.invoke(
        app, ["tune", "--scenario", str(tiny), *TUNE, "--workers", "2", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    return result.stdout, output.read_bytes()


def _shard_processes(tiny: Path, count: int, out: Path) -> list[subprocess.CompletedProcess[str]]:
    """`scaler tune --shard /N` in N processes at once, as N pods of an Indexed Job."""
    base = {k: v for k, v in os.environ.items() if k != SHARD_INDEX_ENV}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [base.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "scaler.cli", "tune", "--scenario", str(tiny), *TUNE]
    command += ["--workers", "1", "--shard", f"/{count}", "--out", str(out)]
    running = [
        subprocess.Popen(
            command,
            env={**base, SHARD_INDEX_ENV: str(k)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    finished = []
    for process in running:
        stdout, stderr = process.communicate(timeout=100)
        finished.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return finished


@pytest.mark.parametrize("count", [1, 3, 7])
def test_merged_shards_equal_the_single_run(
    count: int, tiny: Path, single: tuple[str, bytes], tmp_path: Path
) -> None:
    """N shard processes (K from JOB_COMPLETION_INDEX) then --merge: the same frontier on
    stdout and the same chosen policy, byte for byte, as one machine running them all."""
    shards = tmp_path / "shards"
    for k, done in enumerate(_shard_processes(tiny, count, shards)):
        assert done.returncode == 0, done.stderr
        share = len(range(k, CANDIDATES, count))
        assert f"tune shard {k}/{count} ({MODEL}): 0/{share} candidates done" in done.stderr
        assert f"tune shard {k}/{count} ({MODEL}): {share}/{share} candidates done" in done.stderr
    assert sorted(p.name for p in shards.iterdir()) == [
        f"tune-shard-{k:04d}-of-{count:04d}.json" for k in range(count)
    ]
    output = tmp_path / "merged.yaml"
    merged = runner.invoke(app, ["tune", "--merge", str(shards), "--output", str(output)])
    assert merged.exit_code == 0, merged.output
    frontier, policy = single
    assert "chosen" in frontier
    assert merged.stdout == frontier
    assert output.read_bytes() == policy
    assert f"merged {count} of {count} shards" in merged.stderr


def test_candidate_list_depends_only_on_policy_count_and_seed(tiny: Path) -> None:
    """The same inputs give the same list; another seed another order (same current first)."""
    base = prepare(tiny).policy(MODEL)
    first = candidate_list(base, 12, seed=3)
    assert candidate_list(base, 12, seed=3) == first
    other = candidate_list(base, 12, seed=4)
    assert other.points[0] == first.points[0]  # the current policy is always item 0
    assert other.points != first.points


# --- Broken shard sets --------------------------------------------------------------------


@pytest.fixture
def three_shards(tiny: Path, tmp_path: Path) -> Path:
    """Shards 0, 1, 2 of 3 of a 4-candidate tune (in this process: fast)."""
    prepared = prepare(tiny)
    folder = tmp_path / "shards"
    for k in range(3):
        tune_shard(prepared, MODEL, Shard(k, 3), folder, candidates=4, workers=1)
    return folder


def _merge(folder: Path, *extra: str) -> Any:
    return runner.invoke(app, ["tune", "--merge", str(folder), "--slo-target", "0.5", *extra])


def test_a_missing_shard_is_named_and_refused(three_shards: Path) -> None:
    """Shard 1 of 3 absent: exit 1, the index and the expected file named, nothing written."""
    (three_shards / "tune-shard-0001-of-0003.json").unlink()
    result = _merge(three_shards)
    assert result.exit_code == 1
    assert "1 of 3 shards missing: 1 (no tune-shard-0001-of-0003.json)" in result.stderr
    assert "--allow-incomplete" in result.stderr
    assert "chosen" not in result.stdout


def test_allow_incomplete_chooses_among_the_shards_present(
    three_shards: Path, tmp_path: Path
) -> None:
    """--allow-incomplete: a warning naming the missing shard; the choice among 3 of 4."""
    (three_shards / "tune-shard-0001-of-0003.json").unlink()
    output = tmp_path / "partial.yaml"
    result = _merge(three_shards, "--allow-incomplete", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert "shards 1 missing; chosen among the 3 candidates evaluated" in result.stderr
    assert "frontier of 3 candidates" in result.stdout
    assert "3 candidates." in output.read_text()
    merged = merge_tune(three_shards, allow_incomplete=True)
    assert sorted(merged.shards.results) == [0, 2, 3]  # shard 1 of 3 held item 1 only


def test_a_duplicate_shard_is_named_with_both_files(three_shards: Path) -> None:
    """The same shard index in two files (a copy): both files named, refused."""
    copy = three_shards / "tune-shard-0002-of-0003 (copy).json"
    copy.write_bytes((three_shards / "tune-shard-0002-of-0003.json").read_bytes())
    result = _merge(three_shards)
    assert result.exit_code == 1
    assert "shard 2 of 3 appears 2 times (duplicate)" in result.stderr
    assert "tune-shard-0002-of-0003.json" in result.stderr
    assert "tune-shard-0002-of-0003 (copy).json" in result.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "corrupt, not JSON (line 1"),
        (lambda text: "", "corrupt, not JSON"),
        (lambda text: text.replace('"kind": "tune"', '"kind": "bench"'), "not a format-1 tune"),
        (lambda text: text.replace('"gib_hours"', '"gib"'), "missing key 'gib_hours'"),
        (lambda text: text.replace('"item": 2', '"item": 3'), "not this shard's items"),
    ],
    ids=["truncated", "empty", "other-kind", "field-missing", "foreign-item"],
)
def test_a_corrupt_shard_is_named_by_file_and_index(
    three_shards: Path, damage: Any, message: str
) -> None:
    """A truncated, empty or edited shard 2: the file and its shard index in the error."""
    path = three_shards / "tune-shard-0002-of-0003.json"
    path.write_text(damage(path.read_text()))
    result = _merge(three_shards)
    assert result.exit_code == 1
    assert str(path) in result.stderr
    assert "shard 2" in result.stderr
    assert message in result.stderr
    assert "run that shard again" in result.stderr


def test_shards_of_another_run_are_refused(tiny: Path, three_shards: Path) -> None:
    """Shard 1 re-run with another seed (another candidate list): the differing inputs named."""
    tune_shard(prepare(tiny), MODEL, Shard(1, 3), three_shards, candidates=4, seed=9, workers=1)
    result = _merge(three_shards)
    assert result.exit_code == 1
    assert "tune-shard-0001-of-0003.json: shard 1/3 is from another run" in result.stderr
    assert "points, seed differ" in result.stderr


def test_merging_an_empty_or_absent_folder_says_so(tmp_path: Path) -> None:
    """No folder, or a folder without shard files: named, with what to run first."""
    assert "shard folder not found" in _merge(tmp_path / "nope").stderr
    result = _merge(tmp_path)
    assert result.exit_code == 1
    assert "no tune shard files (tune-shard-*.json)" in result.stderr


def test_a_shard_beyond_the_candidate_count_holds_nothing_and_merges(
    tiny: Path, tmp_path: Path
) -> None:
    """5 shards of a 4-candidate list: shard 4 runs no candidate; the set still merges."""
    prepared = prepare(tiny)
    for k in range(5):
        tune_shard(prepared, MODEL, Shard(k, 5), tmp_path, candidates=4, workers=1)
    empty = json.loads((tmp_path / "tune-shard-0004-of-0005.json").read_text())
    assert empty["results"] == []
    assert len(merge_tune(tmp_path).result.candidates) == 4


# --- The --shard spec and the options around it -------------------------------------------


def test_shard_spec_takes_k_from_the_indexed_job_variable() -> None:
    """K/N as given; /N reads JOB_COMPLETION_INDEX; the item split is i mod N == K."""
    assert parse_shard("2/7", {}) == Shard(2, 7)
    assert parse_shard("/7", {SHARD_INDEX_ENV: "5"}) == Shard(5, 7)
    assert parse_shard("5/7", {SHARD_INDEX_ENV: "5"}) == Shard(5, 7)
    assert list(Shard(2, 7).items(20)) == [2, 9, 16]


@pytest.mark.parametrize(
    ("spec", "env", "message"),
    [
        ("3", {}, "expected K/N"),
        ("7/7", {}, "K=7 is outside 0..6"),
        ("1/0", {}, "N must be at least 1"),
        ("a/3", {}, "K 'a' is not an integer"),
        ("/3", {}, "K omitted but JOB_COMPLETION_INDEX is not set"),
        ("$(JOB_COMPLETION_INDEX)/3", {}, "was not expanded"),
        ("1/3", {SHARD_INDEX_ENV: "2"}, "this pod is shard 2"),
        ("/3", {SHARD_INDEX_ENV: "x"}, "JOB_COMPLETION_INDEX='x' is not an integer"),
    ],
)
def test_shard_spec_errors_say_what_is_wrong(spec: str, env: dict[str, str], message: str) -> None:
    """Malformed specs, an unexpanded $(JOB_COMPLETION_INDEX), a pod index that disagrees."""
    with pytest.raises(ShardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(spec, env)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", MODEL, "--shard", "0/2"], "--shard K/N and --out DIR go together"),
        (["--model", MODEL, "--shard", "0/2", "--out", "x", "--output", "y"], "writes no policy"),
        (["--merge", "x", "--shard", "0/2"], "give one of the two"),
        (["--merge", "x", "--seed", "3"], "--seed: not with --merge"),
        (["--model", MODEL, "--allow-incomplete"], "--allow-incomplete applies to --merge only"),
        ([], "--model is required"),
    ],
)
def test_tune_refuses_options_that_do_not_go_together(arguments: list[str], message: str) -> None:
    """Each misuse of --shard/--out/--merge is an error saying which options clash."""
    result = runner.invoke(app, ["tune", *arguments])
    assert result.exit_code == 1
    assert message in result.stderr


def test_shard_log_prints_one_line_per_finished_item(capsys: pytest.CaptureFixture[str]) -> None:
    """Plain stderr lines (pod logs are not terminals): done/total and the elapsed time."""
    ticks: Iterator[float] = iter([100.0, 101.5])
    log = ShardLog("tune shard 1/3 (m)", "candidates", clock=lambda: next(ticks))
    log.start(2)
    log(1.0, 2.0)
    assert capsys.readouterr().err.splitlines() == [
        "tune shard 1/3 (m): 0/2 candidates done",
        "tune shard 1/3 (m): 1/2 candidates done (1.5 s)",
    ]


# --- bench --------------------------------------------------------------------------------


def _without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_times(v) for k, v in value.items() if k != "wall_s"}
    if isinstance(value, list):
        return [_without_wall_times(v) for v in value]
    return value


def test_merged_bench_shards_equal_the_single_bench(tiny: Path, tmp_path: Path) -> None:
    """Two shapes x (kpa, oracle) in 3 shards: the merged tables are the single run's, and
    the JSON too once each report's wall_s (a wall time, not a figure) is left out."""
    other = tmp_path / "other.yaml"
    document = yaml.safe_load(tiny.read_text())
    other.write_text(yaml.safe_dump({**document, "name": "other", "seed": 5}))
    (tmp_path / "trace.csv").write_bytes((tiny.parent / "trace.csv").read_bytes())
    shapes = ["--scenario", str(tiny), "--scenario", str(other), "--baseline", "kpa"]
    single_json = tmp_path / "single.json"
    alone = runner.invoke(app, ["bench", *shapes, "--workers", "1", "--json", str(single_json)])
    assert alone.exit_code == 0, alone.output
    shards = tmp_path / "shards"
    for k in range(3):
        run = runner.invoke(
            app, ["bench", *shapes, "--workers", "1", "--shard", f"{k}/3", "--out", str(shards)]
        )
        assert run.exit_code == 0, run.output
        assert f"bench shard {k}/3: 0/{len(range(k, 4, 3))} runs done" in run.stderr
        assert run.stdout == ""
    merged_json = tmp_path / "merged.json"
    merged = runner.invoke(app, ["bench", "--merge", str(shards), "--json", str(merged_json)])
    assert merged.exit_code == 0, merged.output
    assert merged.stdout == alone.stdout
    single_doc = json.loads(single_json.read_text())
    merged_doc = json.loads(merged_json.read_text())
    assert _without_wall_times(merged_doc) == _without_wall_times(single_doc)
    assert merged_doc != {}


def test_bench_merge_refuses_a_missing_shard_and_leaves_out_its_shapes_when_told(
    tiny: Path, tmp_path: Path
) -> None:
    """Shard 1 of 2 missing: refused by index; --allow-incomplete drops the incomplete shape."""
    shapes = ["--scenario", str(tiny), "--baseline", "kpa", "--workers", "1"]
    run = runner.invoke(app, ["bench", *shapes, "--shard", "0/2", "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    refused = runner.invoke(app, ["bench", "--merge", str(tmp_path)])
    assert refused.exit_code == 1
    assert "1 of 2 shards missing: 1 (no bench-shard-0001-of-0002.json)" in refused.stderr
    partial = runner.invoke(app, ["bench", "--merge", str(tmp_path), "--allow-incomplete"])
    assert partial.exit_code == 0, partial.output
    assert "shapes left out: tiny" in partial.stderr
    assert "summary over 0 shapes" in partial.stdout


def test_report_records_round_trip_exactly(tiny: Path) -> None:
    """A report through to_record/JSON/from_record is equal to itself (bench shard files)."""
    from scaler.simulation.comparison import make_autoscaler
    from scaler.simulation.engine import simulate
    from scaler.simulation.report import build_report

    prepared = prepare(tiny)
    report = build_report(simulate(prepared, make_autoscaler("hpa", prepared)))
    again = SimulationReport.from_record(json.loads(json.dumps(report.to_record())))
    assert again == report


def test_read_shards_passes_results_through_the_kinds_parser(tmp_path: Path) -> None:
    """The generic reader: results by item across shards; a parser error marks the file."""
    for k in range(2):
        items = list(Shard(k, 2).items(3))
        write_shard(
            tmp_path,
            "demo",
            Shard(k, 2),
            items=3,
            inputs={"x": 1},
            results=[{"item": i, "v": i * 10} for i in items],
            wall_s=0.5,
        )
    read = read_shards(tmp_path, "demo", lambda r: int(r["v"]))
    assert read.results == {0: 0, 1: 10, 2: 20}
    assert list(read.results) == [0, 1, 2]
    with pytest.raises(ShardError, match=r"demo-shard-0000-of-0002.json \(shard 0/2\): corrupt"):
        read_shards(tmp_path, "demo", lambda r: int(r["nope"]))
    (tmp_path / "demo-shard-0001-of-0002.json").unlink()
    with pytest.raises(MissingShardsError) as missing:
        read_shards(tmp_path, "demo", lambda r: int(r["v"]))
    assert missing.value.missing == (1,)
