"""Where delivered images live: the ``Storage`` ABC, local files behind signed links, URL signing."""

from .base import Storage, StoredImage
from .local import LocalStorage
from .signing import UrlSigner, load_or_create_secret

__all__ = ["LocalStorage", "Storage", "StoredImage", "UrlSigner", "load_or_create_secret"]
