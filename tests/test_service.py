"""``ImageService`` and its ``Job`` driven directly, without HTTP: the preview engine, a real SQLite
ledger, local storage and the reference decoder's worker processes. What these tests pin down is the
job's life: admission, preparation, running, and the one settlement that gives everything back."""

from __future__ import annotations

import base64
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from seedream_server.accounts import Accounts, AccountStore, ApiKey, UsageRecord
from seedream_server.admission import ModelQueue, PixelBudget
from seedream_server.delivery import Deliverer
from seedream_server.engines.base import EngineCapabilities
from seedream_server.engines.preview import PreviewEngine
from seedream_server.errors import InvalidParameter, IpmRateLimitExceeded, ServerOverloaded
from seedream_server.events import ImageDelivered, JobCompleted
from seedream_server.job import Job
from seedream_server.metrics import Metrics
from seedream_server.models import ModelRegistry, ServedModel
from seedream_server.planner import RulePlanner
from seedream_server.protocol import GenerationRequest
from seedream_server.references import ReferenceDecoder, ReferencePolicy
from seedream_server.service import ImageService
from seedream_server.storage import LocalStorage, UrlSigner
from support import MODEL, SEED_PROMPT


@dataclass
class Rig:
    service: ImageService
    accounts: Accounts
    served: ServedModel
    storage: LocalStorage

    async def ledger(self) -> dict[str, UsageRecord]:
        await self.accounts.drain()
        rows = await self.accounts.call(self.accounts.store.usage_records)
        return {row.request_id: row for row in rows}


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, max_queue: int = 4, pixel_budget: int = 10**9) -> AsyncIterator[Rig]:
    accounts = Accounts(AccountStore(f"sqlite:///{tmp_path / 'ledger.db'}"))
    await accounts.start()
    metrics = Metrics()
    storage = LocalStorage(tmp_path / "images", UrlSigner(b"s" * 32), "http://test", 3600)
    served = ServedModel(MODEL, PreviewEngine(), ModelQueue(MODEL, 1, max_queue))
    decoder = ReferenceDecoder(1, 30.0)
    service = ImageService(
        models=ModelRegistry([served]),
        accounts=accounts,
        deliverer=Deliverer(storage, metrics, "AI生成", 90),
        planner=RulePlanner(),
        metrics=metrics,
        reference_policy=ReferencePolicy(),
        decoder=decoder,
        pixel_budget=PixelBudget(pixel_budget),
    )
    try:
        yield Rig(service, accounts, served, storage)
    finally:
        await decoder.aclose()
        await accounts.aclose()


def request(**fields: object) -> GenerationRequest:
    values: dict[str, object] = {"model": MODEL, "prompt": "a lighthouse", "size": "1280x720", **fields}
    return GenerationRequest(**values)  # type: ignore[arg-type]


def data_uri(size: tuple[int, int] = (64, 48)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def admitted(rig: Rig, generation: GenerationRequest, key: ApiKey | None = None) -> Job:
    job = await rig.service.admit(generation, uuid.uuid4().hex, key)
    await rig.service.prepare(job)
    return job


async def test_a_group_runs_in_order_and_settles_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await admitted(r, request(prompt=SEED_PROMPT, sequential=True))
        assert r.served.queue.admitted == 1
        assert [t.prompt[-2:] for t in job.plan.tasks] == ["早晨", "中午", "晚上"]
        running = (await r.ledger())[job.request_id]
        assert (running.status, running.images) == ("running", 0)  # durable before any image is made
        async with job:
            await job.start()
            events = [event async for event in job.events()]
        delivered = [e for e in events if isinstance(e, ImageDelivered)]
        assert [e.index for e in delivered] == [0, 1, 2]
        assert isinstance(events[-1], JobCompleted) and events[-1].usage.generated_images == 3
        assert all(e.url and e.url.startswith("http://test/files/") for e in delivered)
        row = (await r.ledger())[job.request_id]
        assert (row.status, row.images, row.tokens) == ("ok", 3, 3 * 1280 * 720 // 256)
        assert r.served.queue.admitted == 0 and r.service.pixel_budget.reserved == 0
        await job.settle()  # settling again changes nothing
        assert (await r.ledger())[job.request_id].status == "ok"


async def test_the_ledger_counts_images_as_they_are_delivered(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await admitted(r, request(prompt=SEED_PROMPT, sequential=True))
        async with job:
            await job.start()
            events = job.events()
            first = await anext(events)
            assert isinstance(first, ImageDelivered)
            row = (await r.ledger())[job.request_id]
            assert (row.status, row.images) == ("running", 1)  # a crash now would still count this image
            await events.aclose()  # the client went away
        row = (await r.ledger())[job.request_id]
        assert (row.status, row.images) == ("cancelled", 1)
        assert r.served.queue.admitted == 0
        assert sorted(p.name for p in r.storage.root.iterdir()) == [f"{job.request_id}_0.jpeg"]


async def test_a_refusal_after_admission_is_the_jobs_own_row(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await r.service.admit(request(images=("data:image/png;base64,AAAA",)), "f" * 32)
        with pytest.raises(InvalidParameter) as refused:
            await r.service.prepare(job)
        assert refused.value.param == "image"
        row = (await r.ledger())["f" * 32]
        assert (row.status, row.images) == ("InvalidParameter", 0)
        assert r.served.queue.admitted == 0


async def test_references_wait_compressed_and_are_decoded_when_the_job_starts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await admitted(r, request(images=(data_uri(), data_uri((48, 64))), size="1K"))
        assert [(ref.width, ref.height) for ref in job.references] == [(64, 48), (48, 64)]
        assert (job.plan.width, job.plan.height) == (1152, 864)  # the first reference's 4:3
        assert r.service.pixel_budget.reserved == 2 * 64 * 48  # what they will hold once decoded
        async with job:
            await job.start()
            events = [event async for event in job.events()]
        assert isinstance(events[-1], JobCompleted) and events[-1].usage.generated_images == 1
        assert r.service.pixel_budget.reserved == 0


async def test_the_decoded_pixel_budget_refuses_new_jobs_with_429(tmp_path: Path) -> None:
    async with rig(tmp_path, pixel_budget=4000) as r:
        holding = await admitted(r, request(images=(data_uri(),)))  # 3072 pixels of 4000
        with pytest.raises(ServerOverloaded):
            await admitted(r, request(images=(data_uri(),)))
        assert r.served.queue.admitted == 1  # the refused job gave its place back
        await holding.settle()
        assert r.service.pixel_budget.reserved == 0
        await (await admitted(r, request(images=(data_uri(),)))).settle()


async def test_a_full_queue_refuses_before_any_work(tmp_path: Path) -> None:
    async with rig(tmp_path, max_queue=0) as r:
        first = await admitted(r, request())
        with pytest.raises(ServerOverloaded):
            await r.service.admit(request(), "e" * 32)
        assert "e" * 32 not in await r.ledger()  # refused before admission: the HTTP layer records it
        await first.settle()


async def test_images_per_minute_are_reserved_for_the_plan_and_settled_to_what_was_delivered(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        _, secret = r.accounts.store.create_key("k", ipm=3)
        key = await r.accounts.authenticate(f"Bearer {secret}")
        job = await admitted(r, request(prompt=SEED_PROMPT, sequential=True), key)
        with pytest.raises(IpmRateLimitExceeded):
            await admitted(r, request(), key)  # the group holds all three
        async with job:
            await job.start()
            events = job.events()
            await anext(events)
            await events.aclose()
        assert r.accounts.limiter.used("k") == 1  # two images never made are given back


@pytest.mark.parametrize(("engine_limit", "policy_limit", "given"), [(14, 14, 15), (3, 14, 4), (14, 2, 3)])
async def test_the_reference_count_is_checked_once_against_the_model(
    tmp_path: Path, engine_limit: int, policy_limit: int, given: int
) -> None:
    async with rig(tmp_path) as r:
        r.served.engine = PreviewEngine(EngineCapabilities(max_references=engine_limit))
        r.service.reference_policy = ReferencePolicy(max_count=policy_limit)
        limit = min(engine_limit, policy_limit)
        with pytest.raises(InvalidParameter) as refused:
            await r.service.admit(request(images=(data_uri(),) * given), "c" * 32)
        assert refused.value.param == "image"
        assert f"{given} images; model {MODEL} takes at most {limit} reference images" in refused.value.message
        assert r.served.queue.admitted == 0  # refused before admission, before any fetching
        job = await admitted(r, request(images=(data_uri(),) * limit))  # the limit itself is fine
        await job.settle()
