"""YOLOX person detector: batched letterbox, network, decode and NMS, all on the device.

The converted COCO YOLOX-Nano (`mipnet weights convert yolox_nano_416x416.onnx ...`) is the
shipped default detector. Checkpoints are safetensors files whose metadata names the builder
(`yolox_nano`), the network configuration and the provenance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from ..checkpoints.detector import builder_for, load_yolox
from ..models.yolox import YOLOX, decode_outputs
from .base import Candidates, DetectorBase

PAD_VALUE = 114.0  # YOLOX's letterbox grey
COCO_PERSON = 0  # class index of "person" in YOLOX's 80 COCO classes


class YoloxPersonDetector(DetectorBase):
    """Person boxes from a YOLOX network; same `detect` contract as `PersonDetector`.

    Images are letterboxed (aspect kept, top-left, grey padding) to the network's input size
    on the device in one batch; a box's score is objectness × person probability; boxes below
    `score_thresh` are dropped and the rest go through NMS at `nms_iou`. A size in `sizes` is
    the side of a square letterbox (the network's own: 416 for the COCO YOLOX-Nano).
    """

    def __init__(self, model: YOLOX, *, name: str = "yolox_nano", score_thresh: float = 0.5,
                 nms_iou: float = 0.5, max_detections: int = 100,
                 device: str | torch.device = "cpu", batch_size: int = 8,
                 sizes: Sequence[int] | None = None) -> None:
        super().__init__(name, score_thresh, nms_iou, max_detections, batch_size, device, sizes)
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu":  # NHWC: faster depthwise convolutions in oneDNN
            self.model.to(memory_format=torch.channels_last)
        self.input_size = model.config.input_size

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> YoloxPersonDetector:
        model, _ = load_yolox(path)
        return cls(model, name=builder_for(model.config), **kwargs)

    def letterbox(self, images: Sequence[np.ndarray], size: tuple[int, int]
                  ) -> tuple[torch.Tensor, np.ndarray]:
        """(B, 3, H, W) BGR 0-255 network input of (H, W) `size` and each image's resize
        ratio."""
        h, w = size
        batch = torch.full((len(images), 3, h, w), PAD_VALUE, device=self.device)
        ratios = np.zeros(len(images))
        for i, img in enumerate(images):
            r = min(h / img.shape[0], w / img.shape[1])
            nh, nw = max(int(img.shape[0] * r), 1), max(int(img.shape[1] * r), 1)
            t = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
            t = t.permute(2, 0, 1).flip(0).unsqueeze(0).float()  # RGB -> BGR
            resized = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
            batch[i, :, :nh, :nw] = resized[0].round().clamp(0, 255)
            ratios[i] = r
        return batch, ratios

    def _candidates(self, images: Sequence[np.ndarray], size: int | None) -> list[Candidates]:
        hw = self.input_size if size is None else (size, size)
        x, ratios = self.letterbox(images, hw)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        out = decode_outputs(self.model(x), hw, self.model.config.strides)
        return [self._person_boxes(out[k], ratios[k], img.shape)
                for k, img in enumerate(images)]

    def _person_boxes(self, out: torch.Tensor, ratio: float, shape: tuple) -> Candidates:
        scores = out[:, 4] * out[:, 5 + COCO_PERSON]
        keep = scores >= self.score_thresh
        cxcywh, scores = out[keep, :4], scores[keep]
        xyxy = torchvision.ops.box_convert(cxcywh, "cxcywh", "xyxy") / ratio
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, shape[1])
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, shape[0])
        valid = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        xyxy, scores = xyxy[valid], scores[valid]
        order = torchvision.ops.nms(xyxy, scores, self.nms_iou)[: self.max_detections]
        return xyxy[order], scores[order]
