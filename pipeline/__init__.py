"""Catalog loading, the TFX pipeline definition and its local orchestration."""
