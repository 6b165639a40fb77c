"""The routers: generation (and edits), models, files, and the operational routes."""
