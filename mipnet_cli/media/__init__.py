"""Pictures in and out: reading images and folders (`images`), video decode and encode on
threads (`video`), skeleton overlays (`render`) and the files the tool writes (`writers`: COCO
results and datasets, JSON Lines records, overlays)."""
