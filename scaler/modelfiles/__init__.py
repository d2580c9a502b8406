"""Model files: the pinned Hugging Face file per model, and the fetch that puts it in place.

``pin`` is the pin format (repo, commit, file, size, sha256, sources) and its strict loader;
``fetch`` downloads with the official ``huggingface_hub`` client into the models volume,
resuming, verifying and renaming into place; ``command`` is ``scaler fetch-model``, which the
per-model Kubernetes Jobs run. A driver beside ``live`` and ``activator``: it imports nothing
else from scaler.
"""

from scaler.modelfiles.pin import PIN_KIND, ModelFilePin, PinError, load_pin, parse_pin

__all__ = ["PIN_KIND", "ModelFilePin", "PinError", "load_pin", "parse_pin"]
