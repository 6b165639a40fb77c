"""Seedream model profiles as data: what each model id of the Seedream line accepts (size tiers, pixel
range, reference limit, groups and streaming, prompt modes, tools, output formats, layer decomposition).

Every served model points at a profile (default: 4.0) and every request is validated by it, on every
engine. The table follows the public Ark material of late 2026; where sources disagree it is operator
data: a ``[[profiles]]`` table in the config file overrides any field of a profile by name (see
:func:`apply_overrides`). ``confirmed`` says whether a profile's values are all published by Ark; the 1.5K
and 3K tiers without a published table are derived from their pixel budget (``sizes.TIER_SIZES``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidParameter
from .sizes import SizeLimits

DEFAULT_PROFILE = "seedream-4.0"


@dataclass(frozen=True)
class Profile:
    """One Seedream model: its ids and what a request to it may say."""

    name: str
    ids: tuple[str, ...]  # model ids clients send (Volcengine Ark ``doubao-…``; BytePlus drops ``doubao-``)
    tiers: tuple[str, ...]
    min_pixels: int
    max_pixels: int
    max_references: int
    groups: bool = True  # sequential_image_generation: auto
    stream: bool = True
    prompt_modes: tuple[str, ...] = ("standard", "fast")
    tools: bool = False  # tools: [{"type": "web_search"}]
    layer_decomposition: bool = False
    output_formats: tuple[str, ...] = ("jpeg", "png", "webp")
    confirmed: bool = True
    description: str = ""

    @property
    def sizes(self) -> SizeLimits:
        return SizeLimits(min_pixels=self.min_pixels, max_pixels=self.max_pixels, tiers=self.tiers)

    def refuse(self, field: str, model: str, what: str = "") -> InvalidParameter:
        """The 400 for a field this profile does not take."""
        detail = what or f"the parameter `{field}` is not supported"
        return InvalidParameter(f"The parameter `{field}` is not valid for model {model}: {detail}.", param=field)


def _ids(*names: str) -> tuple[str, ...]:
    """Each Ark id and its BytePlus spelling (without ``doubao-``)."""
    return tuple(spelling for name in names for spelling in (name, name.removeprefix("doubao-")))


PROFILES: tuple[Profile, ...] = (
    Profile(
        "seedream-4.0",
        _ids("doubao-seedream-4-0-250828"),
        tiers=("1K", "2K", "4K"),
        min_pixels=921_600,
        max_pixels=16_777_216,
        max_references=14,
        description="Seedream 4.0: text-to-image, up to 14 references, groups of up to 15, streaming.",
    ),
    Profile(
        "seedream-4.5",
        _ids("doubao-seedream-4-5-251128"),
        tiers=("2K", "4K"),
        min_pixels=3_686_400,
        max_pixels=16_777_216,
        max_references=14,
        prompt_modes=("standard",),
        description="Seedream 4.5: 2K and 4K, prompt optimisation in standard mode only.",
    ),
    Profile(
        "seedream-5.0-lite",
        _ids("doubao-seedream-5-0-260128", "doubao-seedream-5-0-lite-260128"),
        tiers=("2K", "3K", "4K"),
        min_pixels=3_686_400,
        max_pixels=16_777_216,
        max_references=14,
        prompt_modes=("standard",),
        tools=True,
        output_formats=("jpeg", "png"),
        description="Seedream 5.0 lite: 2K, 3K and 4K, web search, jpeg or png output.",
    ),
    Profile(
        "seedream-5.0-pro",
        _ids("doubao-seedream-5-0-pro-260628"),
        tiers=("1K", "1.5K", "2K"),
        min_pixels=921_600,
        max_pixels=4_624_220,
        max_references=10,
        groups=False,
        stream=False,
        prompt_modes=("standard",),
        layer_decomposition=True,
        output_formats=("jpeg", "png"),
        confirmed=False,
        description="Seedream 5.0 pro: one image per request up to 2K, up to 10 references, layer decomposition.",
    ),
    Profile(
        "seedream-5.0-flash",
        _ids("doubao-seedream-5-0-flash-260915"),
        tiers=("1K", "1.5K", "2K"),
        min_pixels=921_600,
        max_pixels=4_624_220,
        max_references=10,
        groups=False,
        stream=False,
        prompt_modes=("standard", "fast"),
        output_formats=("jpeg", "png"),
        confirmed=False,
        description="Seedream 5.0 flash: one image per request up to 2K, up to 10 references (as pro, unconfirmed).",
    ),
)


class ProfileTable:
    """The profiles by name and by every model id."""

    def __init__(self, profiles: tuple[Profile, ...] = PROFILES) -> None:
        self.profiles = profiles
        self._by_name = {p.name: p for p in profiles}
        self._by_id = {model_id: p for p in profiles for model_id in p.ids}

    def get(self, name: str) -> Profile:
        """A profile by its name or one of its model ids; ``ValueError`` (a config error) otherwise."""
        profile = self._by_name.get(name) or self._by_id.get(name)
        if profile is None:
            known = ", ".join(self._by_name)
            raise ValueError(f"unknown model profile {name!r} (profiles: {known}, or any of their model ids)")
        return profile

    def for_model(self, name: str, aliases: tuple[str, ...] = ()) -> Profile | None:
        """The profile a served model's name or alias is an id of, if any."""
        for model_id in (name, *aliases):
            if model_id in self._by_id:
                return self._by_id[model_id]
        return None


def apply_overrides(profiles: tuple[Profile, ...], overrides: list[dict[str, Any]]) -> tuple[Profile, ...]:
    """``[[profiles]]`` tables of the config file: each names a profile (``name``) and the fields it changes,
    or defines a new one (then every field without a default is required). Unknown fields are errors."""
    known = {f.name for f in fields(Profile)}
    table = {p.name: p for p in profiles}
    for i, entry in enumerate(overrides):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"config: profiles[{i}] needs a string 'name'")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"config: profiles[{i}]: unknown field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        try:
            base = table.get(entry["name"])
            table[entry["name"]] = replace(base, **values) if base is not None else Profile(**values)
        except TypeError as exc:
            raise ValueError(f"config: profiles[{i}]: {exc}") from exc
    return tuple(table.values())
