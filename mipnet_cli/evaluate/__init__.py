"""Scoring poses: COCO / OCHuman metrics through pycocotools (`coco`), CrowdPose metrics
(`crowdpose`), and predicting a whole annotated set to score it (`predictions`: per-instance
and merged AP, the detector-confidence sweep)."""
