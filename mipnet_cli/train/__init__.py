"""Trainers: the heatmap / MoveNet top-down networks (`heatmap`), the single-stage pfs family
(`pfs`) and the person detector (`detector`), with their shared epoch loop and validation."""
