"""Looking inside a network: the λ sweep and per-instance heatmaps of one box (`sweep`) and
their figures (`figures`: contact sheets, GIFs, trajectories, heatmap grids)."""
