"""seedream-server: a self-hosted server for the Seedream 4.0 image generation API."""

__version__ = "0.1.0"
