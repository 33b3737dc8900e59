"""Trainers: the heatmap / MoveNet top-down networks (`heatmap`), the single-stage pfs family
(`pfs`) and the person detector (`detector`), on the shared settings and epoch loop (`base`)."""
