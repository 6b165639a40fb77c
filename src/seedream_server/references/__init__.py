"""Reference images: the request's ``image`` items and uploads, turned into checked, decodable references.

This package owns step 2 of a request (SPEC §4), in modules along its seams:

==============  =================================================================================
``guard``       the request forgery guard: address checks, host parsing, the allowlist (ports too),
                URL targets, and the one resolve-and-check routine for requests and redirects
``fetch``       data URIs (base64 with RFC 2045 white space) and http(s) fetching under caps
``header``      checks before any pixel: format sniffing, size limits from the header, JPEG structure
``decode``      strict, downscaled decoding to RGB (the work of a decoder process)
``decoder``     :class:`ReferenceDecoder`: worker processes, one time budget per request, cancellation
``load``        :func:`fetch_references` (kept compressed) and :func:`load_references` (fetch + decode)
``policy``      :class:`ReferencePolicy` and the reference types; ``errors`` the refusals
==============  =================================================================================

A server fetches when a request arrives (:func:`fetch_references`), holds the compressed
:class:`FetchedReference` list while the job waits, and decodes when its slot comes
(:meth:`ReferenceDecoder.decode`), downscaled to what the engine uses; :func:`decoded_pixels` says how many
pixels that will hold before decoding. Every refusal is a 400 ``InvalidParameter`` with ``param="image"``
and a message ``image[<index>]: <reason>``.
"""

from .decode import decode_reference, decoded_pixels, target_size
from .decoder import ReferenceDecoder
from .errors import ReferenceRejected, UnsafeAddress
from .guard import (
    AllowEntry,
    IPAddress,
    PortEntry,
    Resolver,
    Target,
    check_address,
    parse_allowlist,
    parse_host,
    parse_target,
)
from .header import check_jpeg_structure, inspect_image, sniff_format
from .load import fetch_references, load_references
from .policy import FORMATS, MAX_JPEG_SCANS, FetchedReference, ImageFormat, Reference, ReferencePolicy

__all__ = [
    "FORMATS",
    "MAX_JPEG_SCANS",
    "AllowEntry",
    "FetchedReference",
    "IPAddress",
    "ImageFormat",
    "PortEntry",
    "Reference",
    "ReferenceDecoder",
    "ReferencePolicy",
    "ReferenceRejected",
    "Resolver",
    "Target",
    "UnsafeAddress",
    "check_address",
    "check_jpeg_structure",
    "decode_reference",
    "decoded_pixels",
    "fetch_references",
    "inspect_image",
    "load_references",
    "parse_allowlist",
    "parse_host",
    "parse_target",
    "sniff_format",
    "target_size",
]
