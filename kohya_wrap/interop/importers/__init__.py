"""Importers of other trainers' settings (kohya_ss GUI, sd-scripts, Civitai) into our config, key by key."""
