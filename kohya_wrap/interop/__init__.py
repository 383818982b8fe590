"""Other trainers' settings in and out: kohya_ss GUI, sd-scripts and Civitai configs read into ours
(`importers/`), ours written for the kohya_ss GUI (`export`). Above `train`: they read and write sd-scripts'
own files with its argument spec and our renderer."""
