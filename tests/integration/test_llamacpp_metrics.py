"""What the real ``llama-server`` prints, against what scaler reads and what the emulators serve.

One real server on the tiny model serves the module (start ~0.05 s). An upstream rename or
removal of a series that a query template, the history reader (``scaler record`` /
``calibrate``) or the simulator's export uses fails here, and so does any drift between the
real server and the emulators (metrics: tests/integration/model_servers.py; API:
tests/activator/model_server.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest

from scaler.core import Engine
from scaler.simulation import engine_metrics, openmetrics
from scaler.simulation.engine import simulate
from scaler.simulation.history import ENGINE_NAMES
from scaler.simulation.scaler_policy import ScalerPolicy
from scaler.simulation.traces import TokenSizes, poisson
from scaler.sources.templates import DEFAULT_TEMPLATES
from tests.activator.model_server import ModelServerEmulator
from tests.builders import make_policy
from tests.integration.llama_load import CompletionLoad
from tests.integration.llama_server import LlamaServer, LlamaServers, ModelFileHold, free_port
from tests.integration.model_servers import LlamaCppServer
from tests.simulation.scenario_builders import make_scenario

pytestmark = pytest.mark.llamacpp

_NAME = re.compile(r"\bllamacpp:[a-z_]+")


def families(exposition: str) -> dict[str, tuple[str, str]]:
    """name -> (type, HELP) of every family in a text-format exposition."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE))
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", exposition, re.MULTILINE))
    return {name: (kind, helps.get(name, "")) for name, kind in kinds.items()}


def sample_lines(exposition: str) -> list[str]:
    """The sample lines (no comments, no blank lines)."""
    return [line for line in exposition.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def real(module_llama_server: LlamaServers) -> LlamaServer:
    """A real server that has served one 8-token completion (so every counter has moved)."""
    server = module_llama_server()
    status, answer = server.post(
        "/v1/completions", {"prompt": "hello", "n_predict": 8, "ignore_eos": True}
    )
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 8
    return server


@pytest.fixture(scope="module")
def real_families(real: LlamaServer) -> dict[str, tuple[str, str]]:
    """The real server's metric families."""
    return families(real.metrics())


def simulator_series() -> dict[str, tuple[str, str]]:
    """Sample name -> (type, HELP) of the llama.cpp series in the simulator's OpenMetrics
    export of a short run (an OpenMetrics counter family ``x`` has the samples ``x_total``)."""
    scenario = make_scenario(
        poisson("tinyllama", rate=0.5, duration=60, sizes=TokenSizes(100, 20), seed=4),
        policies=[make_policy("tinyllama")],
        drain_seconds=60,
    )
    result = simulate(scenario, ScalerPolicy(scenario.policies))
    lines = engine_metrics.render_lines(result, openmetrics.EPOCH)
    return {
        f"{name}_total" if kind == "counter" else name: (kind, help_text)
        for name, (kind, help_text) in families("\n".join(lines)).items()
        if name.startswith("llamacpp:")
    }


def test_every_series_scaler_reads_is_one_the_real_server_exports(
    real_families: dict[str, tuple[str, str]],
) -> None:
    """The query templates, the history reader and the simulator's export name only series
    the real server prints (rate() only on counters); the simulator's types and HELP texts
    are the real ones."""
    templates = {
        name
        for template in DEFAULT_TEMPLATES[Engine.LLAMACPP].values()
        for part in (template.value, template.freshness or "")
        for name in _NAME.findall(part)
    }
    history = {
        value
        for field in fields(ENGINE_NAMES[Engine.LLAMACPP])
        if isinstance(value := getattr(ENGINE_NAMES[Engine.LLAMACPP], field.name), str)
    }
    simulated = simulator_series()
    assert templates, "no llamacpp: name found in the templates"
    for source, names in (("templates", templates), ("history", history), ("simulator", simulated)):
        missing = sorted(set(names) - set(real_families))
        assert not missing, f"{source} reads series the real llama-server does not print: {missing}"
    counters = {name for name, (kind, _) in real_families.items() if kind == "counter"}
    for template in DEFAULT_TEMPLATES[Engine.LLAMACPP].values():
        for name in re.findall(r"rate\(\{__name__=~\"(llamacpp:[a-z_]+)", template.value):
            assert name in counters, f"rate() over {name}, which is not a counter"
    for name, (kind, help_text) in simulated.items():
        assert (kind, help_text) == real_families[name], f"the simulator's {name}"


def test_the_metrics_emulator_prints_what_the_real_server_prints(real: LlamaServer) -> None:
    """Same families in the same order with the same types and HELP texts, one series each
    without labels, and the same Content-Type."""
    with (
        urllib.request.urlopen(real.url + "/metrics", timeout=5) as response,
        LlamaCppServer() as emulator,
        urllib.request.urlopen(emulator.url, timeout=5) as emulated,
    ):
        real_type, real_body = response.headers["Content-Type"], response.read().decode()
        emulated_type, emulated_body = emulated.headers["Content-Type"], emulated.read().decode()
    assert emulated_type == real_type
    assert list(families(emulated_body).items()) == list(families(real_body).items())
    for body in (real_body, emulated_body):
        assert all(re.fullmatch(r"llamacpp:[a-z_]+ \S+", line) for line in sample_lines(body))


async def test_requests_wait_as_deferred_once_every_slot_is_busy(
    llama_server: LlamaServers,
) -> None:
    """The truth the emulator's waiting/running stand for: with 2 slots and 5 long requests,
    2 are processing and 3 deferred, and no generated token is counted yet (a request's tokens
    are added when it ends); once the clients leave, both gauges are back to 0."""
    server = llama_server()
    async with (
        aiohttp.ClientSession() as session,
        CompletionLoad(session, server.completions) as load,
    ):
        load.hold(5)
        busy = await wait_for_gauges(server, processing=2, deferred=3)
    idle = await wait_for_gauges(server, processing=0, deferred=0)
    assert "llamacpp:tokens_predicted_total 0" in sample_lines(busy)
    # Ended by their clients, the streams' tokens are counted after all.
    assert "llamacpp:tokens_predicted_total 0" not in sample_lines(idle)


async def wait_for_gauges(
    server: LlamaServer, *, processing: int, deferred: int, timeout: float = 30.0
) -> str:
    """Scrape the server (every 20 ms, at most `timeout` s) until both gauges show the values;
    return that exposition."""
    wanted = (
        f"llamacpp:requests_processing {processing}",
        f"llamacpp:requests_deferred {deferred}",
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await asyncio.to_thread(server.metrics)
        lines = set(sample_lines(body))
        if all(line in lines for line in wanted):
            return body
        if loop.time() > deadline:
            raise AssertionError(f"gauges never reached {wanted}:\n{body}")
        await asyncio.sleep(0.02)


async def test_the_api_emulator_loads_and_answers_as_the_real_server_does(
    tiny_model: Path, tmp_path: Path
) -> None:
    """While loading, /health and the API answer the same 503 (status, Content-Type, JSON);
    once loaded, /health says the same 200, completions and streams have the same shape."""
    model = Path(shutil.copy(tiny_model, tmp_path / "loading.gguf"))
    real = LlamaServer(model, port=free_port())
    paths = ("/health", "/v1/completions", "/v1/models")
    try:
        with ModelFileHold(model) as hold:
            real.spawn()
            async with ModelServerEmulator(load_seconds=None) as emulated:
                # A new connection each time: llama-server closes one after an event stream
                # without notice (the activator copes, test_activator_llamacpp.py).
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await until_listening(session, real.url)
                    loading_real = [await answer(session, real.url, p) for p in paths]
                    loading_emulated = [await answer(session, str(emulated.url), p) for p in paths]
                    hold.release()
                    await asyncio.to_thread(real.wait_healthy)
                    await emulated.finish_loading()
                    loaded_real = await shapes(session, real.url)
                    loaded_emulated = await shapes(session, str(emulated.url))
    finally:
        real.stop()
    assert loading_emulated == loading_real
    assert all(status == 503 for status, _, _ in loading_real)
    assert loaded_emulated == loaded_real


async def until_listening(session: aiohttp.ClientSession, url: str) -> None:
    """Retry GET /health until the server accepts connections (bounded: 30 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            async with session.get(url + "/health") as response:
                await response.read()
                return
        except aiohttp.ClientConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


async def answer(session: aiohttp.ClientSession, url: str, path: str) -> tuple[int, str, object]:
    """(status, Content-Type, decoded JSON) of GET, or for a completions path POST."""
    if path.endswith("completions"):
        request = session.post(url + path, json={"prompt": "hi", "n_predict": 2})
    else:
        request = session.get(url + path)
    async with request as response:
        return response.status, response.headers["Content-Type"], await response.json()


async def shapes(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """The shape (keys and kinds, not the generated text) of a loaded server's answers."""
    found: dict[str, object] = {}
    async with session.get(url + "/health") as response:
        found["health"] = (response.status, await response.json())
    # A fixed sampling seed: the same tokens every run (random weights, so some are half
    # UTF-8 characters the server holds back; 16 of them always include whole ones).
    fixed = {"ignore_eos": True, "seed": 16}
    for path, request in (
        ("/v1/completions", {"prompt": "hi", "n_predict": 16, **fixed}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": 16, **fixed}),
    ):  # fmt: skip
        async with session.post(url + path, json=request) as response:
            found[path] = (response.status, response.headers["Content-Type"],
                           shape(await response.json()))  # fmt: skip
        async with session.post(url + path, json={**request, "stream": True}) as response:
            events = (await response.read()).decode().split("\n\n")
            decoded = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
            # A chat stream opens with a role delta, sent with the first token; the random
            # model's first token is often half a UTF-8 character, held back, and then the
            # real server sends none: leave it out of the comparison.
            tokens = [e for e in decoded[:-1] if "role" not in e["choices"][0].get("delta", {})]
            found[path + " stream"] = (
                response.status,
                response.headers["Content-Type"],
                # the token events (how many differs, as a split UTF-8 character waits)
                sorted({json.dumps(shape(e), sort_keys=True) for e in tokens}),
                shape(decoded[-1]),  # finish reason, timings (and for completions usage)
                events[-2:],  # data: [DONE], then the end
            )
    return found


def shape(value: object) -> object:
    """`value` with every leaf replaced by its type name (dict keys kept)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__
