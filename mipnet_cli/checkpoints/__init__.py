"""Weights: our checkpoint format (`format`: safetensors + metadata, loaders and importers of
official MIPNet / HRNet / mmpose files), detector checkpoints (`detector`), the model zoo
(`zoo`: names, cache, sha256-checked downloads, offline messages) and the converters of
published ONNX / TF.js networks (`convert/`)."""
