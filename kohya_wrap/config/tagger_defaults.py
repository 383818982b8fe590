"""The tagger's defaults, kept apart from the Pydantic models so that the CLI's `--help` can show them cheaply."""

from __future__ import annotations

TAGGER_MODEL = "SmilingWolf/wd-vit-tagger-v3"
GENERAL_THRESHOLD = 0.35
CHARACTER_THRESHOLD = 0.85
# Auto-prune proposes a tag when at least this share of the images has it (see data/captions.py for why 0.6).
AUTO_PRUNE_MIN_SHARE = 0.6
