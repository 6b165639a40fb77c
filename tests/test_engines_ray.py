"""Engines on Ray Serve (``executor = "ray"``): placement options, what crosses the handle, and a tiny
diffusers model on a local Ray with 2 CPUs (weights loaded once per replica, progress forwarded, a closed
stream stops the replica's denoising, errors keep their code).

The two-process topology (shared replicas, a killed replica) is ``tests/test_scaleout.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

import tiny_pipelines
from ray_support import local_ray
from seedream_server.config import ModelConfig
from seedream_server.engines.base import ImageJob, ImageTask, Progress
from seedream_server.engines.ray import (
    RAY_KEYS,
    RayEngine,
    RayPlacement,
    pack_image,
    pack_job,
    split_placement,
    unpack_image,
    unpack_job,
)
from seedream_server.engines.registry import build_engine
from seedream_server.errors import InvalidParameter

ray = pytest.importorskip("ray")
module_loop = pytest.mark.asyncio(loop_scope="module")

# --- placement options (no Ray needed) ------------------------------------------------------------


def model(**options: object) -> ModelConfig:
    return ModelConfig("m", "preview", options=dict(options))


def test_ray_keys_are_taken_out_before_the_engine_sees_them() -> None:
    placement, inner = split_placement(model(executor="ray", replicas=2, ray_actor_options={"num_gpus": 1}, steps=4))
    assert placement == RayPlacement(replicas=2, ray_actor_options={"num_gpus": 1})
    assert inner.options == {"steps": 4} and not set(RAY_KEYS) & set(inner.options)
    assert placement.deployment_options() == {"ray_actor_options": {"num_gpus": 1}, "num_replicas": 2}
    scaled, _ = split_placement(model(executor="ray", autoscaling={"min": 0, "max": 4}))
    assert scaled is not None
    assert scaled.deployment_options()["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "initial_replicas": 0,
    }
    assert split_placement(model(steps=4)) == (None, model(steps=4))
    assert split_placement(model(executor="local")) == (None, model())
    assert isinstance(build_engine(model(executor="ray")), RayEngine)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "dask"}, "executor must be one of local, ray"),
        ({"replicas": 2}, 'need executor = "ray"'),
        ({"executor": "ray", "replicas": 0}, "replicas must be an integer of at least 1"),
        ({"executor": "ray", "replicas": True}, "replicas must be an integer"),
        ({"executor": "ray", "replicas": 2, "autoscaling": {"min": 0, "max": 2}}, "not both"),
        ({"executor": "ray", "autoscaling": {"min": 3, "max": 2}}, "0 <= min <= max"),
        ({"executor": "ray", "autoscaling": {"min": 0, "max": 0}}, "max must be at least 1"),
        ({"executor": "ray", "autoscaling": {"low": 0}}, "autoscaling must be a table"),
        ({"executor": "ray", "ray_actor_options": 1}, "ray_actor_options must be a table"),
    ],
)
def test_bad_placements_are_refused_with_the_model_name(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"model 'm': .*{message}"):
        split_placement(model(**options))


def test_images_and_jobs_cross_the_handle_as_bytes() -> None:
    for mode in ("RGB", "RGBA", "L"):
        image = Image.new(mode, (7, 5), color=200)
        packed = pack_image(image)
        assert isinstance(packed[2], bytes)
        assert unpack_image(packed).tobytes() == image.tobytes() and unpack_image(packed).mode == mode
    job = ImageJob("m", (ImageTask(0, "p", 1),), 64, 64, references=(Image.new("RGB", (3, 3), "red"),))
    plain, refs = pack_job(job)
    assert plain.references == () and len(refs) == 1
    assert unpack_job((plain, refs)).references[0].getpixel((0, 0)) == (255, 0, 0)


# --- a tiny diffusers model on a local Ray -----------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray of 2 CPUs for this module; the engines connect to it by its address."""
    with local_ray() as address:
        yield address


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tiny_sd(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RayEngine]:
    source = tiny_pipelines.build_sd(tmp_path_factory.mktemp("tiny") / "sd")
    config = ModelConfig(
        "tiny-sd-ray",
        "diffusers",
        options={
            "source": str(source),
            "steps": 3,
            "device": "cpu",
            "executor": "ray",
            "replicas": 1,
            "ray_actor_options": {"num_cpus": 0.5},
        },
    )
    engine = build_engine(config, ray_address=ray_address)
    assert isinstance(engine, RayEngine)
    await engine.start()
    yield engine
    await engine.aclose()


def job(count: int, request_id: str) -> ImageJob:
    tasks = tuple(ImageTask(i, f"a red boat {i}", 7 + i) for i in range(count))
    return ImageJob("tiny-sd-ray", tasks, 64, 64, request_id=request_id)


@module_loop
async def test_tiny_diffusers_on_ray_streams_images_with_progress(tiny_sd: RayEngine) -> None:
    seen: list[Progress] = []
    tiny_sd.add_progress_hook(seen.append)
    before = await tiny_sd.replica_stats()
    results = [result async for result in tiny_sd.generate(job(2, "r-progress"))]
    assert [r.index for r in results] == [0, 1]
    assert all(r.image is not None and r.image.size[0] > 0 for r in results)
    steps = [(p.index, p.step) for p in seen if p.request_id == "r-progress"]
    for index in (0, 1):  # the two images may share a batch: their steps interleave, each in order
        assert [step for i, step in steps if i == index] == [1, 2, 3]
    after = await tiny_sd.replica_stats()
    assert after["pid"] == before["pid"]  # one replica process, its weights loaded once
    assert after["engine"]["images"] == before["engine"]["images"] + 2
    assert "via diffusers" in tiny_sd.capabilities.description  # capabilities come from the replica
    assert tiny_sd.capabilities.max_references == 1


@module_loop
async def test_closing_the_stream_stops_the_replica_between_steps(tiny_sd: RayEngine) -> None:
    before = await tiny_sd.replica_stats()
    stream = tiny_sd.generate(job(6, "r-cancel"))
    async for first in stream:
        assert first.index == 0
        break
    await stream.aclose()
    stats = before
    for _ in range(200):  # bounded: the replica reports the cancelled images
        stats = await tiny_sd.replica_stats()
        if stats["engine"]["cancelled_images"] > before["engine"]["cancelled_images"]:
            break
        await asyncio.sleep(0.05)
    assert stats["engine"]["cancelled_images"] > before["engine"]["cancelled_images"]
    assert stats["engine"]["images"] < before["engine"]["images"] + 6
    results = [r async for r in tiny_sd.generate(job(1, "r-after"))]  # the replica serves the next job
    assert len(results) == 1 and results[0].image is not None


@module_loop
async def test_engine_errors_cross_the_handle_with_their_code_and_param(tiny_sd: RayEngine) -> None:
    plain = job(1, "r-bad")
    bad = ImageJob(plain.model, plain.tasks, 64, 64, request_id="r-bad", layer_decomposition=True)
    with pytest.raises(InvalidParameter) as caught:
        _ = [r async for r in tiny_sd.generate(bad)]
    assert caught.value.param == "layer_decomposition" and caught.value.status == 400
    assert "does not decompose images into layers" in caught.value.message


def test_a_model_file_path_is_all_a_replica_needs(tmp_path: Path) -> None:
    """The inner config is plain data: it pickles (it is what Serve ships to each replica)."""
    import pickle

    _, inner = split_placement(ModelConfig("x", "diffusers", options={"source": str(tmp_path), "executor": "ray"}))
    assert pickle.loads(pickle.dumps(inner)) == inner


def test_serve_config_files_build_the_same_application() -> None:
    """``import_path: seedream_server.engines.ray:build_app`` (Serve config files, KubeRay RayService)."""
    from seedream_server.engines.ray import build_app

    app = build_app({"name": "sdxl", "engine": "preview", "options": {"replicas": 2}})
    assert type(app).__name__ == "Application"
    with pytest.raises(ValueError, match="replicas must be an integer"):
        build_app({"name": "sdxl", "options": {"replicas": 0}})
