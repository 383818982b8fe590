"""kohya_wrap: SeaArt-style LoRA training on your own machine, through kohya-ss/sd-scripts."""

__version__ = "0.1.0"
