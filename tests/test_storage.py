"""Local storage and signed links (SPEC §10): downloads, tampering, expiry, traversal, atomic writes,
the retention sweeper, the persisted signing secret and ``public_url``.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from seedream_server.config import Settings
from seedream_server.errors import AccessDenied
from seedream_server.http import create_app
from seedream_server.storage import LocalStorage, UrlSigner, load_or_create_secret
from seedream_server.storage.base import IMAGE_NAME_PATTERN
from support import GENERATIONS, assert_error, body, eventually, running

NAME = "0123456789abcdef0123456789abcdef_0.jpeg"


async def make_url(client: httpx.AsyncClient) -> str:
    response = await client.post(GENERATIONS, json=body(size="1K", response_format="url"))
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["url"])


def link_parts(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path, query["expires"][0], query["signature"][0]


@pytest.fixture
def storage(app: FastAPI) -> LocalStorage:
    store = app.state.storage
    assert isinstance(store, LocalStorage)
    return store


# --- downloads ----------------------------------------------------------------------------------


async def test_download_through_the_signed_link(client: httpx.AsyncClient, storage: LocalStorage) -> None:
    before = int(time.time())
    url = await make_url(client)
    after = int(time.time()) + 1
    path, expires, _ = link_parts(url)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:3] == b"\xff\xd8\xff"
    name = path.rsplit("/", 1)[1]
    assert (storage.root / name).read_bytes() == response.content
    assert before + 24 * 3600 <= int(expires) <= after + 24 * 3600  # valid 24 h by default
    head = await client.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(response.content))


async def test_link_is_durable_before_it_is_returned(client: httpx.AsyncClient, storage: LocalStorage) -> None:
    url = await make_url(client)
    name = urlsplit(url).path.rsplit("/", 1)[1]
    assert (storage.root / name).is_file()
    assert [p.name for p in storage.root.iterdir() if p.name.startswith(".tmp")] == []


# --- tampering and expiry -----------------------------------------------------------------------


def _flip(hex_text: str) -> str:
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


async def test_tampered_links_are_403(client: httpx.AsyncClient) -> None:
    url = await make_url(client)
    path, expires, signature = link_parts(url)
    other_path, other_expires, other_signature = link_parts(await make_url(client))
    tampered = [
        {"expires": expires, "signature": _flip(signature)},
        {"expires": expires, "signature": signature.upper()},
        {"expires": expires, "signature": signature[:-2]},
        {"expires": expires, "signature": ""},
        {"expires": str(int(expires) + 1), "signature": signature},
        {"expires": str(int(expires) - 1), "signature": signature},
        {"expires": "0" + expires, "signature": signature},
        {"expires": expires + "0", "signature": signature},
        {"expires": "-" + expires, "signature": signature},
        {"expires": "abc", "signature": signature},
        {"expires": "1" * 40, "signature": signature},
        {"expires": "²", "signature": signature},  # str.isdigit() is true for this one
        {"expires": "١٢٣٤٥٦٧٨٩٠", "signature": signature},  # Arabic-Indic digits
        {"expires": other_expires, "signature": other_signature},  # another image's signature
        {"expires": expires},
        {"signature": signature},
        {},
    ]
    for query in tampered:
        response = await client.get(f"{path}?{urlencode(query)}")
        assert_error(response, 403, "AccessDenied")
    # the other image's link is fine on its own path
    assert (await client.get(f"{other_path}?expires={other_expires}&signature={other_signature}")).status_code == 200
    assert (await client.get(url)).status_code == 200


async def test_expired_link_is_403(client: httpx.AsyncClient, storage: LocalStorage) -> None:
    url = await make_url(client)
    name = urlsplit(url).path.rsplit("/", 1)[1]
    expired = storage.signed_url(name, int(time.time()) - 5)
    response = await client.get(expired)
    assert_error(response, 403, "AccessDenied")
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize("hours", [0.0, -1.0, float("nan"), float("inf")])
def test_retention_must_be_a_positive_number(settings: Settings, hours: float) -> None:
    with pytest.raises(ValueError, match="retention_hours"):  # it used to give links that were born expired
        settings.with_overrides(retention_hours=hours)


async def test_short_retention_link_expires(settings: Settings) -> None:
    app = create_app(settings.with_overrides(retention_hours=1 / 3600))  # one second
    async with running(app) as client:
        before = int(time.time())
        url = await make_url(client)
        after = int(time.time()) + 1
        _, expires, _ = link_parts(url)
        assert before <= int(expires) <= after + 1
        if time.time() < int(expires):
            assert (await client.get(url)).status_code == 200  # valid until it expires
        await eventually(lambda: time.time() > int(expires), "the link's expiry passed", interval=0.05)
        assert_error(await client.get(url), 403, "AccessDenied")


async def test_valid_signature_for_a_missing_file_is_404(client: httpx.AsyncClient, storage: LocalStorage) -> None:
    response = await client.get(storage.signed_url(NAME, int(time.time()) + 60))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "InvalidEndpointOrModel.NotFound"


# --- traversal ----------------------------------------------------------------------------------

TRAVERSALS = [
    "/files/..%2Fsecret.key",
    "/files/..%2fsecret.key",
    "/files/%2e%2e%2fsecret.key",
    "/files/%2e%2e/secret.key",
    "/files/..%5Csecret.key",
    "/files/%252e%252e%252fsecret.key",
    "/files/..%2F..%2Fdata%2Fsecret.key",
    "/files/secret.key",
    "/files/%2e%2e",  # (plain "/files/.." is normalised away by the client; test_server.py sends it raw)
    "/files/images",
    "/files/%2Fetc%2Fpasswd",
    "/files/..%2Fimages%2F" + NAME,
    "/files/" + NAME + "%00.txt",
    "/files/" + NAME + "%0A",
    "/files/" + NAME.upper(),
    "/files/" + NAME.replace(".jpeg", ".jpg"),
    "/files/" + NAME + ".bak",
    "/files/" + NAME.replace("_0", "_100"),
    "/files/.tmp-abc",
    "/files/",
]


async def test_traversal_never_serves_the_secret(
    client: httpx.AsyncClient, storage: LocalStorage, settings: Settings
) -> None:
    secret = (Path(settings.data_dir) / "secret.key").read_bytes()
    (storage.root / ".tmp-abc").write_bytes(b"partial")
    await make_url(client)
    for path in TRAVERSALS:
        for query in ("", "?expires=9999999999&signature=" + "0" * 64):
            response = await client.get(path + query)
            assert response.status_code in (403, 404), (path, response.status_code)
            assert secret not in response.content
            assert b"partial" not in response.content
            assert response.json()["error"]["code"] in ("AccessDenied", "InvalidEndpointOrModel.NotFound")


async def test_names_outside_the_pattern_are_404_even_with_a_valid_signature(
    client: httpx.AsyncClient, storage: LocalStorage, settings: Settings
) -> None:
    secret = (Path(settings.data_dir) / "secret.key").read_bytes()
    (storage.root / "notes.txt").write_bytes(b"private notes")
    (storage.root / ".tmp-x").write_bytes(b"partial")
    expires = int(time.time()) + 60
    for name in ["../secret.key", "secret.key", "notes.txt", ".tmp-x", NAME.upper(), NAME + ".bak"]:
        signature = storage.signer.signature(name, expires)
        response = await client.get(
            "/files/" + name.replace("/", "%2F"), params={"expires": expires, "signature": signature}
        )
        assert response.status_code == 404, name
        assert secret not in response.content and b"private" not in response.content
        with pytest.raises(Exception) as info:
            storage.open_path(name, str(expires), signature)
        assert getattr(info.value, "status", None) == 404


def test_name_pattern() -> None:
    assert IMAGE_NAME_PATTERN.match(NAME)
    assert IMAGE_NAME_PATTERN.match(NAME.replace("_0.jpeg", "_14.png"))
    assert IMAGE_NAME_PATTERN.match(NAME.replace("jpeg", "webp"))
    for bad in [NAME + "\n", "../" + NAME, NAME.upper(), NAME.replace("_0", "_123"), NAME[1:], "x" + NAME]:
        assert not IMAGE_NAME_PATTERN.match(bad), bad


# --- writes -------------------------------------------------------------------------------------


def _local(tmp_path: Path, retention_s: float = 3600) -> LocalStorage:
    return LocalStorage(tmp_path / "images", UrlSigner(b"k" * 32), "http://example.test/", retention_s)


async def test_put_writes_exact_bytes_and_no_temp_files(tmp_path: Path) -> None:
    store = _local(tmp_path)
    before = int(time.time())
    stored = await store.put(NAME, b"\xff\xd8\xffdata")
    after = int(time.time()) + 1
    assert stored.name == NAME
    assert (store.root / NAME).read_bytes() == b"\xff\xd8\xffdata"
    assert os.listdir(store.root) == [NAME]
    _, expires, signature = link_parts(stored.url)
    assert stored.url.startswith(f"http://example.test/files/{NAME}?expires={expires}&signature=")
    assert before + 3600 <= int(expires) <= after + 3600
    assert store.open_path(NAME, expires, signature) == store.root / NAME


async def test_put_refuses_names_outside_the_pattern(tmp_path: Path) -> None:
    store = _local(tmp_path)
    for name in ["../x.jpeg", "secret.key", NAME + "/x", "/abs/" + NAME, NAME.upper()]:
        with pytest.raises(ValueError):
            await store.put(name, b"x")
    assert os.listdir(store.root) == []
    assert not (tmp_path / "x.jpeg").exists()


async def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    store = _local(tmp_path)
    (store.root / NAME).mkdir()  # the final rename cannot replace a directory
    with pytest.raises(OSError):
        await store.put(NAME, b"data")
    assert os.listdir(store.root) == [NAME]


async def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    store = _local(tmp_path)
    await store.put(NAME, b"first")
    await store.put(NAME, b"second")
    assert (store.root / NAME).read_bytes() == b"second"
    assert os.listdir(store.root) == [NAME]


# --- sweeper ------------------------------------------------------------------------------------


async def test_sweeper_deletes_images_past_retention(tmp_path: Path) -> None:
    store = _local(tmp_path, retention_s=3600)
    old, fresh = NAME, NAME.replace("_0", "_1")
    await store.put(old, b"old")
    await store.put(fresh, b"fresh")
    now = time.time()
    os.utime(store.root / old, (now - 3700, now - 3700))
    os.utime(store.root / fresh, (now - 3500, now - 3500))
    stale_tmp, new_tmp, other = store.root / ".tmp-stale", store.root / ".tmp-new", store.root / "README.txt"
    for path in (stale_tmp, new_tmp, other):
        path.write_bytes(b"x")
    os.utime(stale_tmp, (now - 7200, now - 7200))
    os.utime(other, (now - 10**6, now - 10**6))
    assert await store.sweep() == 2
    assert sorted(os.listdir(store.root)) == sorted([fresh, ".tmp-new", "README.txt"])
    assert await store.sweep() == 0


async def test_app_sweeper_runs_at_start_up(settings: Settings) -> None:
    images = Path(settings.data_dir) / "images"
    images.mkdir(parents=True)
    (images / NAME).write_bytes(b"old")
    old = time.time() - 25 * 3600
    os.utime(images / NAME, (old, old))
    app = create_app(settings)
    async with running(app):
        await eventually(lambda: not (images / NAME).exists(), "the sweeper removed the old image")
        assert not (images / NAME).exists()


# --- signing ------------------------------------------------------------------------------------


def test_signer_is_namespaced_and_checks_expiry() -> None:
    files, other = UrlSigner(b"s" * 32), UrlSigner(b"s" * 32, namespace="other")
    signature = files.signature(NAME, 2000)
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    assert other.signature(NAME, 2000) != signature
    assert UrlSigner(b"t" * 32).signature(NAME, 2000) != signature
    files.verify(NAME, "2000", signature, now=1999)
    files.verify(NAME, "2000", signature, now=2000)
    with pytest.raises(AccessDenied, match="expired"):
        files.verify(NAME, "2000", signature, now=2001)
    with pytest.raises(AccessDenied):
        other.verify(NAME, "2000", signature, now=0)
    with pytest.raises(AccessDenied):
        files.verify(NAME.replace("_0", "_1"), "2000", signature, now=0)


def test_secret_is_created_once_with_private_mode(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "d")
    assert len(first) == 64
    mode = stat.S_IMODE((tmp_path / "d" / "secret.key").stat().st_mode)
    assert mode == 0o600
    assert load_or_create_secret(tmp_path / "d") == first
    assert load_or_create_secret(tmp_path / "e") != first
    configured = "a-configured-secret-of-32-bytes!"
    assert load_or_create_secret(tmp_path / "f", configured) == configured.encode()
    assert not (tmp_path / "f" / "secret.key").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["secret.key"]  # no temp file left behind


def test_signature_that_is_not_lowercase_hex_is_refused_before_comparing() -> None:
    signer = UrlSigner(b"s" * 32)
    signature = signer.signature(NAME, 2000)
    # hmac.compare_digest(str, str) raises TypeError for non-ASCII text: these must be AccessDenied
    for bad in ("é", "é" * 64, signature[:-1] + "é", signature.upper(), "g" * 64, signature + "0", " " + signature):
        with pytest.raises(AccessDenied, match="signature"):
            signer.verify(NAME, "2000", bad, now=0)
    signer.verify(NAME, "2000", signature, now=0)


async def test_non_ascii_signature_is_403_not_500(client: httpx.AsyncClient) -> None:
    path, expires, _ = link_parts(await make_url(client))
    for raw in ("%C3%A9", "%C3%A9" * 64, "%FF", "%00" * 64):
        assert_error(await client.get(f"{path}?expires={expires}&signature={raw}"), 403, "AccessDenied")


@pytest.mark.parametrize("content", [b"", b"\n", b"short-secret\n", b"x" * 31])
def test_a_stored_secret_shorter_than_32_bytes_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "secret.key").write_bytes(content)
    with pytest.raises(ValueError, match="at least 32"):
        load_or_create_secret(tmp_path)
    assert (tmp_path / "secret.key").read_bytes() == content  # left for the operator to fix


def test_a_configured_secret_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="signing_secret"):
        load_or_create_secret(tmp_path, "x" * 31)
    assert load_or_create_secret(tmp_path, "x" * 32) == b"x" * 32


_race_barrier: Any = None


def _init_race(barrier: Any) -> None:
    global _race_barrier
    _race_barrier = barrier


def _race_for_the_secret(data_dir: str) -> bytes:
    """In a worker process: start together with the others, then load or create the secret."""
    _race_barrier.wait(30)
    return load_or_create_secret(Path(data_dir))


def test_processes_starting_on_a_fresh_data_dir_agree_on_one_secret(tmp_path: Path) -> None:
    workers = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    with context.Pool(workers, initializer=_init_race, initargs=(barrier,)) as pool:
        for trial in range(25):  # the old shared-temp-file code failed about one trial in four
            data_dir = tmp_path / f"trial{trial}" / "data"  # the parent does not exist yet either
            secrets_ = pool.map_async(_race_for_the_secret, [str(data_dir)] * workers, chunksize=1).get(60)
            stored = (data_dir / "secret.key").read_bytes()
            assert len(stored) == 64
            assert secrets_ == [stored] * workers, trial
            assert [p.name for p in data_dir.iterdir()] == ["secret.key"], trial
            assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600


async def test_links_survive_a_restart_with_the_same_data_dir(settings: Settings) -> None:
    first = create_app(settings)
    async with running(first) as client:
        url = await make_url(client)
        secret = (Path(settings.data_dir) / "secret.key").read_bytes()
    second = create_app(settings)
    async with running(second) as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
    assert (Path(settings.data_dir) / "secret.key").read_bytes() == secret


async def test_links_from_another_data_dir_are_refused(settings: Settings, tmp_path: Path) -> None:
    first = create_app(settings)
    async with running(first) as client:
        url = await make_url(client)
        name = urlsplit(url).path.rsplit("/", 1)[1]
        data = (Path(settings.data_dir) / "images" / name).read_bytes()
    other = settings.with_overrides(data_dir=str(tmp_path / "other"))
    (tmp_path / "other" / "images").mkdir(parents=True)
    (tmp_path / "other" / "images" / name).write_bytes(data)
    second = create_app(other)
    async with running(second) as client:
        assert_error(await client.get(url), 403, "AccessDenied")


async def test_configured_signing_secret_is_shared_by_instances(settings: Settings, tmp_path: Path) -> None:
    shared = settings.with_overrides(signing_secret="a-shared-secret-for-all-replicas")
    async with running(create_app(shared)) as client:
        url = await make_url(client)
    assert not (Path(settings.data_dir) / "secret.key").exists()
    async with running(create_app(shared)) as client:
        assert (await client.get(url)).status_code == 200


# --- public URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("public_url", ["https://img.example.com", "https://img.example.com/"])
async def test_public_url_sets_the_link_base(settings: Settings, public_url: str) -> None:
    app = create_app(settings.with_overrides(public_url=public_url))
    async with running(app) as client:
        url = await make_url(client)
        assert url.startswith("https://img.example.com/files/")
        assert "//files" not in url
        path = urlsplit(url)
        response = await client.get(f"{path.path}?{path.query}")  # the proxy forwards the path unchanged
        assert response.status_code == 200


async def test_public_url_with_a_path_prefix(settings: Settings) -> None:
    app = create_app(settings.with_overrides(public_url="https://example.com/seedream/"))
    async with running(app) as client:
        url = await make_url(client)
        assert url.startswith("https://example.com/seedream/files/")


async def test_default_link_base_is_host_and_port(settings: Settings) -> None:
    app = create_app(settings.with_overrides(host="127.0.0.1", port=8123))
    async with running(app) as client:
        assert (await make_url(client)).startswith("http://127.0.0.1:8123/files/")
