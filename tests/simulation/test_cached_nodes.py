"""``cachedNodes``: a node whose page cache a pre-read filled starts the model warm at once.

With an ``uncachedColdStart`` profile the first pod of a model on a node reads the weights
from the volume (Mixtral: ~107 s against 40 s from the page cache). The shipped Mixtral
manifests run `scaler preread` on its preferred nodes at every node boot, so the first wake
of the day on those nodes is a page-cache start too; the scenario says so with
``models.<name>.cachedNodes``. Elsewhere the first start still reads the volume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaler.core import Node
from scaler.simulation.cluster import PodTemplate, VirtualCluster
from scaler.simulation.comparison import make_autoscaler
from scaler.simulation.engine import simulate
from scaler.simulation.scenario import ColdStartProfile, check_scenario, prepare
from tests.builders import ROOT

# Disjoint ranges: a draw tells which profile it came from.
WARM = ColdStartProfile(median_seconds=40, sigma=0.0, max_seconds=60)
COLD = ColdStartProfile(median_seconds=107, sigma=0.0, max_seconds=160)
NODES = (Node("n0", 90.0), Node("n1", 90.0), Node("n2", 90.0))


def _first_start(cached: tuple[int, ...], preferred: tuple[int, ...]) -> float:
    """How long the first pod of a Mixtral-like model takes to start."""
    template = PodTemplate("mixtral", 30.0, 1, 2, WARM, COLD, preferred=preferred, cached=cached)
    cluster = VirtualCluster(NODES, [template], 0)
    (pod,), _ = cluster.scale(0, 1, 10.0)
    return pod.ready_at - pod.placed_at


def test_the_first_start_on_a_cached_node_draws_the_page_cache_start() -> None:
    assert _first_start(cached=(1,), preferred=(1,)) == pytest.approx(40.0)


def test_the_first_start_elsewhere_still_reads_the_volume() -> None:
    assert _first_start(cached=(2,), preferred=(1,)) == pytest.approx(107.0)
    assert _first_start(cached=(), preferred=(1,)) == pytest.approx(107.0)


def _homelab(tmp_path: Path, **mixtral: object) -> Path:
    """The bundled homelab scenario, with absolute paths and these Mixtral fields replaced."""
    document = yaml.safe_load((ROOT / "simulations" / "homelab.yaml").read_text())
    document["policies"] = str(ROOT / "policies")
    for item in document["traffic"]:
        if "file" in item:
            item["file"] = str(ROOT / "simulations" / item["file"])
    profile = document["models"]["mixtral-8x7b"]
    for key, value in mixtral.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    path = tmp_path / "scenario.yaml"
    # In the file's order: each model draws its starts from the seed's child of its index.
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_bundled_homelab_wakes_mixtral_from_the_page_cache(tmp_path: Path) -> None:
    """End to end: its first Mixtral start is a page-cache start with the pre-read, and a
    volume read without it (the same draws otherwise)."""

    def first_mixtral_start(path: Path) -> float:
        prepared = prepare(path)
        result = simulate(prepared, make_autoscaler("scaler", prepared))
        mixtral = result.models.index("mixtral-8x7b")
        pods = sorted((p for p in result.pods if p.model == mixtral), key=lambda p: p.created)
        return pods[0].ready - pods[0].placed

    with_preread = first_mixtral_start(ROOT / "simulations" / "homelab.yaml")
    without = first_mixtral_start(_homelab(tmp_path, cachedNodes=None))
    assert with_preread <= 110.0  # coldStart's maxSeconds
    assert without >= 107.0 * 0.5  # the uncached profile (median 107 s, sigma 0.2)
    assert with_preread < without


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"cachedNodes": ["ms01-2", "ms01-9"]},
            "models.mixtral-8x7b.cachedNodes: unknown node(s) ms01-9",
        ),
        (
            {"uncachedColdStart": None},
            "models.mixtral-8x7b.cachedNodes: has no effect without uncachedColdStart",
        ),
    ],
)
def test_a_cached_node_list_that_cannot_apply_is_an_error_naming_the_field(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    scenario, errors = check_scenario(_homelab(tmp_path, **fields))
    assert scenario is None
    (error,) = errors
    assert message in error.message
