"""The local web app (`kohya-wrap ui`): pages over the command layer, the run folders and the queue database."""
