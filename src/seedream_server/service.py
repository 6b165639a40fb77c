"""The one orchestration of a generation request: validate, references, plan, generate, finish, deliver,
account. :meth:`ImageService.admit` and :meth:`ImageService.prepare` run every step that can refuse the
request (400/403/404/429) before any response starts: the first returns an admitted
:class:`~seedream_server.job.Job`, the second fetches, plans and reserves for it. The job then waits for
its engine slot, runs the engine and yields one event per image (see ``job.py``).

::

    admit:   1. validate (model, key, quota, prompt, counts, size)   models.py, protocol.py, sizes.py
             2. admit (queue place, ledger row "running")             admission.py, accounts/
    prepare: 3. references (fetched, header-checked, compressed)       references/
             4. plan (size, image count, per-image prompts, seeds)     sizes.py, planner/
             5. reserve (images per minute, decoded pixels)            accounts/, admission.py
    job:     6. start (slot, decode references, check them)            admission.py, references/
             7. generate, finish, deliver, account                     engines/, delivery.py, accounts/
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from dataclasses import replace

from .accounts import Accounts, ApiKey
from .admission import PixelBudget
from .delivery import Deliverer
from .engines.base import ImageTask, ReferenceMode
from .errors import InvalidParameter
from .job import Job, Plan
from .metrics import Metrics
from .models import ModelRegistry, ServedModel
from .moderation import Moderation
from .planner import Planner
from .protocol import MAX_IMAGES_PER_REQUEST, MAX_SEED, GenerationRequest
from .references import FetchedReference, ReferenceDecoder, ReferencePolicy, decoded_pixels, fetch_references
from .sizes import delivered_size, parse_size
from .websearch import WebSearch

log = logging.getLogger("seedream_server.service")

#: layers a layer decomposition may return besides its base image. Its plan has 1 + MAX_LAYERS tasks (all the
#: request's prompt): the images-per-minute reservation covers the most it may deliver and settles to what it
#: did; engines read tasks[0] and return the base (index 0) and at most len(tasks) - 1 layers.
MAX_LAYERS = 16


class ImageService:
    """Owns the request pipeline and the objects its jobs share; one instance per app."""

    def __init__(
        self,
        *,
        models: ModelRegistry,
        accounts: Accounts,
        deliverer: Deliverer,
        planner: Planner,
        metrics: Metrics,
        reference_policy: ReferencePolicy,
        decoder: ReferenceDecoder,
        pixel_budget: PixelBudget,
        moderation: Moderation | None = None,
        web_search: WebSearch | None = None,
        max_prompt_chars: int = 4000,
    ) -> None:
        self.models = models
        self.accounts = accounts
        self.deliverer = deliverer
        self.planner = planner
        self.metrics = metrics
        self.reference_policy = reference_policy
        self.decoder = decoder
        self.pixel_budget = pixel_budget
        self.moderation = moderation or Moderation()
        self.web_search = web_search
        self.max_prompt_chars = max_prompt_chars
        self._jobs = 0  # admitted jobs not yet settled
        self._idle = asyncio.Event()
        self._idle.set()

    # -- jobs in flight (for shutdown) -----------------------------------------------------------------

    def job_started(self) -> None:
        self._jobs += 1
        self._idle.clear()

    def job_ended(self) -> None:
        self._jobs -= 1
        if self._jobs == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until every admitted job has settled (for shutdown: every ledger row closed first)."""
        await self._idle.wait()

    # -- the request pipeline ----------------------------------------------------------------------------

    async def admit(self, request: GenerationRequest, request_id: str, key: ApiKey | None = None) -> Job:
        """Steps 1-2: the checks that need no I/O, then a queue place and the job's ledger row.

        A refusal here leaves nothing behind (the caller records it); from the returned job on, the job
        accounts for the request itself.
        """
        # 1. validate: the model, the key's access and quota, and every check that needs no I/O
        served = self.models.resolve(request.model)
        self.models.check_access(key, served)
        if key is not None:
            await self.accounts.check_quota(key)
        parsed_size = self._validate(request, served)
        # 2. admit: a queue place (429 when full) and the ledger row
        job = Job(self, request, request_id, served, key, parsed_size)
        await job.admit()
        return job

    async def prepare(self, job: Job) -> None:
        """Steps 3-5: references, plan, reservations. On a refusal the job settles (its ledger row gets the
        error's code) before the error propagates."""
        try:
            # 3. references: fetched concurrently, header-checked, kept compressed until the job runs
            await self._references(job)
            # 4. plan (after a web search, which may rewrite the prompt): size, image count, prompts and seeds
            if "web_search" in job.request.tools and self.web_search is not None:
                found = await self.web_search.search(job.request.prompt)
                job.request, job.web_searches = replace(job.request, prompt=found.prompt), found.searches
            started = time.perf_counter()
            job.plan = await self._plan(job.request, job.parsed_size, job.references, job.served)
            self.metrics.stage_seconds.labels("plan").observe(time.perf_counter() - started)
            # 5. reserve the planned images against the key's window
            await job.reserve_images()
        except BaseException as exc:
            await job.settle(exc)
            raise

    async def _references(self, job: Job) -> None:
        """Step 3, as the engine takes references: relayed as sent, or fetched and checked (and, for engines
        that take pixels, their decoded size reserved from the server-wide budget)."""
        request, caps = job.request, job.served.engine.capabilities
        if caps.references is ReferenceMode.FORWARDED and all(isinstance(item, str) for item in request.images):
            job.forwarded = tuple(str(item) for item in request.images)
            return
        started = time.perf_counter()
        references = await fetch_references(request.images, self.reference_policy)
        if references:
            self.metrics.stage_seconds.labels("fetch").observe(time.perf_counter() - started)
        if caps.references is ReferenceMode.FORWARDED:  # uploads, relayed as data URIs
            job.forwarded = tuple(_data_uri(ref) for ref in references)
        decoded = caps.references is ReferenceMode.DECODED
        pixels = sum(decoded_pixels(ref, caps.reference_pixels) for ref in references) if decoded else 0
        job.hold_references(references, pixels)

    def _validate(self, request: GenerationRequest, served: ServedModel) -> tuple[int, int] | str:
        """Checks that depend on settings, on the model's profile and on its engine; returns the parsed size."""
        caps, profile = served.engine.capabilities, served.profile
        if len(request.prompt) > self.max_prompt_chars:
            raise InvalidParameter(
                f"The parameter `prompt` is too long: {len(request.prompt)} characters; "
                f"the limit is {self.max_prompt_chars}.",
                param="prompt",
            )
        limit = min(caps.max_references, profile.max_references, self.reference_policy.max_count)
        if len(request.images) > limit:
            raise InvalidParameter(
                f"The parameter `image` has {len(request.images)} images; model {served.name} "
                f"takes at most {limit} reference images.",
                param="image",
            )
        if not request.sequential and len(request.images) + request.n > MAX_IMAGES_PER_REQUEST:
            raise InvalidParameter(
                f"The parameter `n` is too large: {len(request.images)} reference images + {request.n} "
                f"outputs exceed {MAX_IMAGES_PER_REQUEST}.",
                param="n",
            )
        _check_profile(request, served)
        self.moderation.check_prompt(request.prompt)
        return parse_size(request.size, profile.sizes, served.name)

    async def _plan(
        self,
        request: GenerationRequest,
        parsed_size: tuple[int, int] | str,
        references: list[FetchedReference],
        served: ServedModel,
    ) -> Plan:
        """Step 4: the delivered size (a preset's ratio may come from the first reference) and the tasks."""
        first = (references[0].width, references[0].height) if references else None
        width, height = delivered_size(parsed_size, request.prompt, first)
        cap = min(request.max_images, MAX_IMAGES_PER_REQUEST - len(request.images))
        if request.layer_decomposition:  # one image decomposed: a base and at most MAX_LAYERS layers
            prompts, reason = (request.prompt,) * (1 + MAX_LAYERS), f"layer decomposition, at most {MAX_LAYERS} layers"
        elif request.sequential and served.engine.capabilities.plans_groups:
            prompts, reason = (request.prompt,) * cap, f"planned by the engine, at most {cap}"
        elif request.sequential:
            plan = await self.planner.plan(request.prompt, cap, thinking=request.thinking)
            prompts, reason = plan.prompts, plan.reason
        else:
            prompts, reason = (request.prompt,) * request.n, "disabled" if request.n == 1 else f"n={request.n}"
        seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
        tasks = tuple(ImageTask(index=i, prompt=p, seed=(seed + i) % (MAX_SEED + 1)) for i, p in enumerate(prompts))
        log.debug("planned %d image(s): %s", len(tasks), reason)
        return Plan(width, height, tasks)


def _check_profile(request: GenerationRequest, served: ServedModel) -> None:
    """400 for a field the model's profile does not take, naming the field and the model."""
    profile, model = served.profile, served.name
    if request.sequential and not profile.groups:
        raise profile.refuse("sequential_image_generation", model, "it makes one image per request (no groups)")
    if request.stream and not profile.stream:
        raise profile.refuse("stream", model, "it does not stream")
    if request.fast and "fast" not in profile.prompt_modes:
        modes = ", ".join(profile.prompt_modes)
        raise profile.refuse("optimize_prompt_options.mode", model, f"fast is not offered (modes: {modes})")
    if request.tools and not profile.tools:
        raise profile.refuse("tools", model, "it does not use tools")
    if request.layer_decomposition and not profile.layer_decomposition:
        raise profile.refuse("layer_decomposition", model, "it does not decompose images into layers")
    if request.layer_decomposition and not served.engine.capabilities.layer_decomposition:
        raise profile.refuse("layer_decomposition", model, f"its {served.engine.kind} engine does not decompose images")
    if request.output_format not in profile.output_formats:
        formats = ", ".join(profile.output_formats)
        raise profile.refuse("output_format", model, f"{request.output_format} is not offered ({formats})")


def _data_uri(ref: FetchedReference) -> str:
    return f"data:image/{ref.format};base64,{base64.b64encode(ref.data).decode('ascii')}"
