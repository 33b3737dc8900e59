"""Person boxes: the detector interface (`base`), torchvision detectors and the small person
Faster R-CNN (`torchvision_detectors`, `person_rcnn`), YOLOX (`yolox`), opening any of them by
name (`registry`), box files and ground-truth boxes (`boxes`), and the box sources a run takes
its boxes from (`sources`)."""
