"""Datasets, samplers, chip caches, datamodules, the legend, reference points and the demo world."""
