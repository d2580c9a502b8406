"""Trace readers (canonical, Azure, Mooncake), bad input, scaling and synthetic generators."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scaler.cli import app
from scaler.simulation.traces import (
    TokenSizes,
    Trace,
    TraceError,
    TraceSource,
    diurnal,
    merge,
    poisson,
    read_trace,
    sessions,
    write_canonical,
)

MODELS = ("tinyllama", "mistral-7b", "deepseek-coder", "mixtral-8x7b")
BUNDLED = Path(__file__).resolve().parents[2] / "simulations" / "traces"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_canonical_csv_reads_every_column(tmp_path: Path) -> None:
    """The canonical header maps rows to models by name, times as seconds."""
    path = write(
        tmp_path,
        "t.csv",
        "timestamp,model,prompt_tokens,output_tokens\n0.5,mistral-7b,10,20\n1.25,tinyllama,3,4\n",
    )
    trace = read_trace(TraceSource(path), MODELS).trace
    assert trace.time.tolist() == [0.5, 1.25]
    assert [trace.models[i] for i in trace.model] == ["mistral-7b", "tinyllama"]
    assert trace.prompt.tolist() == [10, 3]
    assert trace.output.tolist() == [20, 4]


def test_azure_trace_becomes_seconds_from_first_row(tmp_path: Path) -> None:
    """Azure datetimes turn into seconds since the first row, on the mapped model."""
    path = write(
        tmp_path,
        "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n",
    )
    trace = read_trace(TraceSource.parse(f"{path}:mistral-7b"), MODELS).trace
    assert trace.time == pytest.approx([0.0, 4.314579])
    assert set(trace.model.tolist()) == {MODELS.index("mistral-7b")}
    assert trace.prompt.tolist() == [374, 396]


def test_bundled_azure_conversation_trace_has_its_documented_rows() -> None:
    """The bundled copy reads as 19,366 requests over about 58 minutes."""
    source = TraceSource(BUNDLED / "azure_llm_2023_conv.csv", "mistral-7b")
    trace = read_trace(source, MODELS).trace
    assert len(trace) == 19_366
    assert 57 * 60 < trace.duration < 59 * 60


def test_mooncake_jsonl_times_are_milliseconds(tmp_path: Path) -> None:
    """Mooncake timestamps are ms; input/output lengths are the token counts."""
    lines = [
        {"timestamp": 1000, "input_length": 50, "output_length": 5, "hash_ids": [1]},
        {"timestamp": 3500, "input_length": 60, "output_length": 6, "hash_ids": [2]},
    ]
    path = write(tmp_path, "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    trace = read_trace(TraceSource.parse(f"{path}:mixtral-8x7b"), MODELS).trace
    assert trace.time.tolist() == [0.0, 2.5]
    assert trace.prompt.tolist() == [50, 60]
    assert trace.output.tolist() == [5, 6]


def test_model_mapping_applies_to_a_canonical_trace(tmp_path: Path) -> None:
    """FILE:MODEL sends every canonical row to MODEL, whatever its model column says."""
    path = write(tmp_path, "c.csv", "timestamp,model,prompt_tokens,output_tokens\n0,whatever,1,1\n")
    trace = read_trace(TraceSource.parse(f"{path}:tinyllama"), MODELS).trace
    assert trace.model.tolist() == [0]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("0,mistral-7b,1\n", "expected 4 fields", 2),
        ("0,mistral-7b,x,1\n", "prompt_tokens: not a number", 2),
        ("0,mistral-7b,1,1\n1,gpt-4,1,1\n", "unknown model 'gpt-4'", 3),
        ("0,mistral-7b,-5,1\n", "prompt_tokens: negative token count", 2),
        ("0,mistral-7b,1,2.5\n", "must be an integer", 2),
        ("-1,mistral-7b,1,1\n", "timestamp: must be a finite number >= 0", 2),
        ("nan,mistral-7b,1,1\n", "timestamp: must be a finite number >= 0", 2),
    ],
)
def test_bad_canonical_rows_name_file_and_line(
    tmp_path: Path, text: str, message: str, line: int
) -> None:
    """Each kind of bad row is an error with the file, the line and what is wrong."""
    path = write(tmp_path, "bad.csv", "timestamp,model,prompt_tokens,output_tokens\n" + text)
    with pytest.raises(TraceError, match=message) as caught:
        read_trace(TraceSource(path), MODELS)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_bytes_that_are_not_utf8_name_their_line_deep_in_the_file(tmp_path: Path) -> None:
    """A bad byte past the reader's first buffer is a TraceError with its line, not a crash."""
    rows = [f"{i},tinyllama,1,2\n".encode() for i in range(3000)]
    rows[2500] = b"2500,tinyllama,\xff1,2\n"
    path = tmp_path / "latin.csv"
    path.write_bytes(b"timestamp,model,prompt_tokens,output_tokens\n" + b"".join(rows))
    with pytest.raises(TraceError, match="not UTF-8") as caught:
        read_trace(TraceSource(path), MODELS)
    assert caught.value.line == 2502


def test_csv_syntax_errors_name_their_line(tmp_path: Path) -> None:
    """A CSV the csv module cannot parse (a field over its size limit) names file and line."""
    huge = '"' + "1" * 200_000 + '"'
    path = write(
        tmp_path,
        "huge.csv",
        f"timestamp,model,prompt_tokens,output_tokens\n0,tinyllama,1,1\n1,tinyllama,{huge},1\n",
    )
    with pytest.raises(TraceError, match="malformed CSV") as caught:
        read_trace(TraceSource(path), MODELS)
    assert str(caught.value).startswith(f"{path}:3: ")


def test_bad_azure_timestamp_names_its_line(tmp_path: Path) -> None:
    """A datetime that does not parse is reported on its own line."""
    path = write(
        tmp_path,
        "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\nyesterday,1,1\n",
    )
    with pytest.raises(TraceError, match="TIMESTAMP: not a datetime") as caught:
        read_trace(TraceSource(path, "tinyllama"), MODELS)
    assert caught.value.line == 3


def test_malformed_mooncake_line_names_its_line(tmp_path: Path) -> None:
    """Broken JSON and missing fields are reported with their line."""
    path = write(tmp_path, "m.jsonl", '{"timestamp": 1, "input_length": 1, "output_length": 1}\n{')
    with pytest.raises(TraceError, match="malformed JSON") as caught:
        read_trace(TraceSource(path, "tinyllama"), MODELS)
    assert caught.value.line == 2
    missing = write(tmp_path, "n.jsonl", '{"timestamp": 1, "input_length": 1}\n')
    with pytest.raises(TraceError, match="missing field 'output_length'"):
        read_trace(TraceSource(missing, "tinyllama"), MODELS)


def test_single_model_formats_require_a_model(tmp_path: Path) -> None:
    """An Azure trace without FILE:MODEL is an error, not a guess."""
    path = write(tmp_path, "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16,1,1\n")
    with pytest.raises(TraceError, match="use FILE:MODEL"):
        read_trace(TraceSource(path), MODELS)


def test_unknown_mapped_model_is_an_error(tmp_path: Path) -> None:
    """FILE:MODEL with a model outside the scenario is refused."""
    path = write(tmp_path, "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16,1,1\n")
    with pytest.raises(TraceError, match="unknown model 'llama-70b'"):
        read_trace(TraceSource.parse(f"{path}:llama-70b"), MODELS)


def test_unknown_header_and_empty_file_are_errors(tmp_path: Path) -> None:
    """An unrecognized header and an empty file are refused on line 1."""
    with pytest.raises(TraceError, match="unrecognized header"):
        read_trace(TraceSource(write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")), MODELS)
    with pytest.raises(TraceError, match="empty trace file"):
        read_trace(TraceSource(write(tmp_path, "e.csv", "")), MODELS)
    header_only = write(tmp_path, "h.csv", "timestamp,model,prompt_tokens,output_tokens\n")
    with pytest.raises(TraceError, match="no requests"):
        read_trace(TraceSource(header_only), MODELS)


def test_unsorted_timestamps_are_sorted_with_a_warning(tmp_path: Path) -> None:
    """Out-of-order rows are repaired by a stable sort and reported, naming the line."""
    path = write(
        tmp_path,
        "u.csv",
        "timestamp,model,prompt_tokens,output_tokens\n"
        "1,tinyllama,1,1\n0.5,tinyllama,2,2\n2,tinyllama,3,3\n",
    )
    loaded = read_trace(TraceSource(path), MODELS)
    assert loaded.trace.time.tolist() == [0.5, 1.0, 2.0]
    assert loaded.trace.prompt.tolist() == [2, 1, 3]
    assert len(loaded.warnings) == 1
    assert f"{path}:3: timestamps out of order" in loaded.warnings[0]


def test_canonical_round_trip(tmp_path: Path) -> None:
    """write_canonical then read_trace gives the same requests."""
    trace = poisson("tinyllama", rate=2, duration=30, sizes=TokenSizes(100, 20), seed=1)
    path = tmp_path / "rt.csv"
    write_canonical(trace.relabel(MODELS), path)
    again = read_trace(TraceSource(path), MODELS).trace
    assert np.allclose(again.time, trace.time, atol=1e-3)
    assert again.prompt.tolist() == trace.prompt.tolist()


def _steady(rate: float = 10.0, duration: float = 2000.0, seed: int = 3) -> Trace:
    return poisson("tinyllama", rate=rate, duration=duration, sizes=TokenSizes(100, 20), seed=seed)


def test_time_scale_stretches_time_and_divides_the_rate() -> None:
    """Time x2: same requests, twice the span."""
    trace = _steady()
    scaled = trace.time_scaled(2.0)
    assert len(scaled) == len(trace)
    assert scaled.time.tolist() == (trace.time * 2).tolist()


def test_rate_scale_thins_to_the_fraction() -> None:
    """Rate x0.25 keeps about a quarter of the requests (seeded, reproducible)."""
    trace = _steady()
    thinned = trace.rate_scaled(0.25, seed=9)
    assert len(thinned) == pytest.approx(len(trace) * 0.25, rel=0.05)
    assert thinned.time.tolist() == trace.rate_scaled(0.25, seed=9).time.tolist()
    assert set(thinned.prompt.tolist()) <= set(trace.prompt.tolist())


def test_rate_scale_replicates_above_one() -> None:
    """Rate x2.5 yields about 2.5 times the requests, still sorted, over the same span."""
    trace = _steady(duration=500)
    more = trace.rate_scaled(2.5, seed=4)
    assert len(more) == pytest.approx(len(trace) * 2.5, rel=0.05)
    assert np.all(np.diff(more.time) >= 0)
    assert more.duration <= trace.duration + trace.duration / len(trace)


def test_merge_sorts_and_unions_models() -> None:
    """Merging two single-model traces interleaves them by time."""
    a = poisson("tinyllama", rate=1, duration=100, sizes=TokenSizes(10, 10), seed=1)
    b = poisson("mistral-7b", rate=1, duration=100, sizes=TokenSizes(10, 10), seed=2)
    both = merge([a, b])
    assert both.models == ("tinyllama", "mistral-7b")
    assert len(both) == len(a) + len(b)
    assert np.all(np.diff(both.time) >= 0)
    assert both.count("mistral-7b") == len(b)


def test_poisson_rate_and_token_means() -> None:
    """A Poisson generator hits its rate and its mean token sizes."""
    trace = _steady(rate=5, duration=4000)
    assert len(trace) / 4000 == pytest.approx(5, rel=0.03)
    assert trace.prompt.mean() == pytest.approx(100, rel=0.05)


def test_diurnal_peak_is_busier_than_trough() -> None:
    """The diurnal generator's peak hour carries about peak_to_trough times the trough's."""
    trace = diurnal(
        "tinyllama",
        mean_rate=1.0,
        peak_to_trough=4.0,
        duration=86_400,
        sizes=TokenSizes(10, 10),
        seed=5,
    )
    peak = np.count_nonzero(abs(trace.time - 14 * 3600) < 1800)
    trough = np.count_nonzero(abs(trace.time - 2 * 3600) < 1800)
    assert peak / trough == pytest.approx(4.0, rel=0.2)


def test_sessions_leave_idle_gaps() -> None:
    """On/off sessions have gaps far longer than the think time."""
    trace = sessions(
        "mixtral-8x7b",
        session_rate=1 / 1800,
        requests_per_session=5,
        think_seconds=30,
        duration=20_000,
        sizes=TokenSizes(10, 10),
        seed=6,
    )
    gaps = np.diff(trace.time)
    assert len(trace) > 10
    assert gaps.max() > 900


HEADER = "timestamp,model,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        pytest.param("0,tinyllama,1e308,4", "token count above", id="1e308"),
        pytest.param(f"0,tinyllama,{2**63},4", "token count above", id="above-int64"),
        pytest.param(f"0,tinyllama,{'9' * 4400},4", "token count", id="4400-digits"),
    ],
)
def test_absurd_token_counts_are_file_line_errors(tmp_path: Path, row: str, needle: str) -> None:
    """Token counts too large for the arrays are a TraceError on their line, not an
    OverflowError."""
    path = write(tmp_path, "t.csv", HEADER + "0,tinyllama,1,1\n" + row + "\n")
    with pytest.raises(TraceError, match=needle) as caught:
        read_trace(TraceSource(path), MODELS)
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="deep"),
        pytest.param('{"timestamp": 1' + "0" * 5000 + "}", "malformed JSON", id="big-int"),
        pytest.param(
            '{"timestamp": 0, "input_length": 1e308, "output_length": 1}',
            "token count above",
            id="1e308",
        ),
    ],
)
def test_hostile_jsonl_is_a_file_line_error(tmp_path: Path, entry: str, needle: str) -> None:
    """Deep nesting, huge integers and absurd numbers in Mooncake JSONL: errors with a line."""
    good = '{"timestamp": 0, "input_length": 1, "output_length": 1}'
    path = write(tmp_path, "t.jsonl", good + "\n" + entry + "\n")
    with pytest.raises(TraceError, match=needle) as caught:
        read_trace(TraceSource.parse(f"{path}:tinyllama"), MODELS)
    assert caught.value.line == 2


def test_unix_timestamps_are_rebased_with_a_warning(tmp_path: Path) -> None:
    """A canonical trace in epoch seconds starts at 0, keeps its spacing, and says so."""
    path = write(
        tmp_path, "t.csv", HEADER + "1700000000,tinyllama,1,1\n1700000002.5,tinyllama,1,1\n"
    )
    loaded = read_trace(TraceSource(path), MODELS)
    assert loaded.trace.time.tolist() == [0.0, 2.5]
    assert any("absolute" in w for w in loaded.warnings)


def test_a_trace_spanning_more_than_a_month_is_refused(tmp_path: Path) -> None:
    """Two requests 40 days apart: refused with the span, instead of simulating 40 idle days."""
    path = write(tmp_path, "t.csv", HEADER + "0,tinyllama,1,1\n3456000,tinyllama,1,1\n")
    with pytest.raises(TraceError, match=r"spans 40\.0 days"):
        read_trace(TraceSource(path), MODELS)


def test_simulate_on_an_epoch_trace_finishes_quickly(tmp_path: Path) -> None:
    """`scaler simulate --trace` on epoch timestamps: rebased, a short run, the warning shown."""
    path = write(
        tmp_path, "t.csv", HEADER + "".join(f"{1700000000 + i},tinyllama,10,5\n" for i in range(60))
    )
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["simulate", "--trace", str(path)])
    assert result.exit_code == 0, result.output
    assert "absolute" in result.output
    assert time.perf_counter() - started < 30
