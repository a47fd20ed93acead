"""ExportServable: a trainer-free TFX component that writes a servable as a SavedModel."""
