"""In-domain pretraining of the detector's ResNet trunk (`birads pretrain`).

No ImageNet weights can be downloaded on air-gapped machines, and a Faster R-CNN trained from
random weights on ~1,000 images learns where a lesion is but not what it is. A classifier of
lesion crops learns categories cheaply: many epochs at a small crop size cost little. So the
detector's own ResNet (the same detectron2 module, built from the same config) is first trained
to classify crops of lesion boxes with context (BI-RADS and pathology) and of background, then
saved as ``backbone.bottom_up.*`` weights that ``birads train --weights`` starts from, with
frozen batch-norm as for ImageNet weights.

Only the training records are used: scoring data stays unseen.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from model import taxonomy
from model.config import PRETRAIN_REPORT, TRUNK_FILE, resolve_device, use_bf16
from model.datasets.masks import read_mask
from model.io import StagedDirectory, read_image
from model.records import Box, ImageRecord

log = logging.getLogger(__name__)
BACKGROUND = "background"
PARTIAL_IOU = (0.15, 0.45)  # a partial crop's IoU with its lesion: under 0.5 (a miss) with a margin
                            # for the training jitter, which moves and scales a crop by up to 15 %
TRUNK_PREFIX = "backbone.bottom_up."


@dataclass
class CropTraining:
    """How a classifier of lesion crops is trained (the trunk's pretraining, the box classifier)."""

    crop_size: int = 112           # small: many cheap epochs (lesions are ~50-150 px in BUS-BRA)
    context: float = 1.5           # crop = box scaled by this about its centre
    keep_aspect: bool = False      # a square crop about the box's longer side: shape and orientation
                                   # (taller than wide, BI-RADS' "not parallel") survive the resize
    vertical_flip: bool = True     # off: the transducer stays on top and posterior shadowing or
                                   # enhancement (BI-RADS descriptors) stays below the lesion
    jitter: float = 0.15           # random shift/scale of the crop, as a fraction of the box
    background_per_lesion: float = 0.5  # crops away from lesions: the net also learns "no lesion"
    misplaced_share: float = 0.0   # of those, boxes beside or around a lesion (IoU < 0.3): the net
                                   # also learns a box that misses the lesion (box classifier's rescore)
    partial_share: float = 0.0     # of the misplaced, boxes inside a lesion on part of it (IoU with it
                                   # 0.15-0.45): the detector's top box sits on part of the lesion in
                                   # most of fold 4's ranking misses (docs/results.md item 60)
    lesion_shaped_background: bool = False  # the others take a random training lesion's height/width
                                   # instead of a square's, whose shape a geometry head reads (item 51)
    label_smoothing: float = 0.0   # of each crop's category target spread over the others: one
                                   # expert's reading, where experts split 3/4 and 4/5 unevenly
    ordinal_loss: float = 1.0      # weight of the squared earth mover's distance between a lesion
                                   # crop's predicted and true category CDF in rank order (Hou et al.
                                   # 2016): calling a 3 a 5 costs more than calling it a 4; 1 measured
                                   # better than 0 on every held-out fold (docs/results.md item 27)
    outline_loss: float = 0.0      # weight of a second task: outline the lesion (the expert's mask,
                                   # cropped as the image) from the last feature maps, where records
                                   # carry masks; shape, margin and orientation are BI-RADS descriptors
    flip_at_test: bool = False     # read each crop and its mirror image and average the two (item
                                   # 27: no better on 2 of 4 folds, so off)
    geometry: bool = False         # the heads also read the box's shape, size and depth in the image
                                   # (``box_geometry``), which a crop stretched to a square hides
    epochs: int = 30
    batch_size: int = 64
    max_lr: float = 0.04           # one-cycle SGD (ImageNet's 0.1 per 256 images, a little above)
    weight_decay: float = 5e-4
    bf16: bool = True
    seed: int = 42


@dataclass
class PretrainSettings(CropTraining):
    base_config: str = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"


def trunk_config(base_config: str) -> CfgNode:
    """The detectron2 config whose ResNet the detector will use (batch-norm while pretraining)."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(base_config))
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    return cfg


def detectron2_trunk(cfg: CfgNode) -> nn.Module:
    """The detector's ResNet, each residual block starting as identity (deep nets then train from
    scratch at a high learning rate)."""
    trunk = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    for name, module in trunk.named_modules():
        if name.endswith("conv3"):
            nn.init.zeros_(module.norm.weight)
    return trunk


def box_geometry(box: tuple[float, float, float, float], height: int, width: int) -> tuple[float, float, float]:
    """What a crop stretched to a square hides of its box, roughly centred on 0: the log of its
    height over its width (BI-RADS' "not parallel": taller than wide), the log of its side against
    the image's (size), and how deep its centre lies (ultrasound depth runs down the image)."""
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    return (math.log(h / w), math.log(math.sqrt(w * h / (width * height))) + 1.5, (y0 + y1) / 2 / height - 0.5)


GEOMETRY_FEATURES = 3  # len(box_geometry(...))


def geometry_tensor(boxes: Sequence[tuple[float, float, float, float]], shapes: Sequence[tuple[int, ...]]
                    ) -> torch.Tensor:
    """The ``box_geometry`` of each box in the image of its shape (H x W[...]), as the heads read
    it: N x GEOMETRY_FEATURES, float32."""
    return torch.tensor([box_geometry(box, *shape[:2]) for box, shape in zip(boxes, shapes)],
                        dtype=torch.float32).reshape(-1, GEOMETRY_FEATURES)


class CropClassifier(nn.Module):
    """A ResNet trunk + pooled linear heads for BI-RADS (with background) and pathology, and with
    ``outline`` a decoder of the lesion's outline from the last feature maps (a training task only).
    With ``geometry``, the heads read each box's ``box_geometry`` beside the pooled features.

    ``trunk`` returns pooled features (N x width), feature maps, or detectron2's {"res5": maps}; a
    torchvision ResNet, which pools, hands its maps to the outline decoder from ``layer4``.
    """

    def __init__(self, trunk: nn.Module, width: int, n_categories: int,
                 mean: list[float], std: list[float], outline: bool = False, geometry: bool = False) -> None:
        super().__init__()
        self.trunk = trunk
        self.geometry = geometry
        heads_width = width + (GEOMETRY_FEATURES if geometry else 0)
        self.category = nn.Linear(heads_width, n_categories)
        self.malignant = nn.Linear(heads_width, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.outline = _outline_decoder(width) if outline else None
        self._maps: torch.Tensor | None = None
        if outline and hasattr(trunk, "layer4"):
            trunk.layer4.register_forward_hook(self._keep_maps)

    def _keep_maps(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._maps = output

    def _features(self, images: torch.Tensor, geometry: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the heads read (pooled features, with the boxes' geometry where the heads take it)
        and, where the trunk shows them, its last feature maps."""
        if self.geometry and geometry is None:
            raise ValueError("this crop classifier reads each box's geometry beside its crop")
        features = self.trunk((images - self.mean) / self.std)
        if isinstance(features, dict):
            features = features["res5"]
        maps = features if features.ndim == 4 else self._maps
        self._maps = None
        pooled = features.mean(dim=(2, 3)) if features.ndim == 4 else features
        if self.geometry:
            pooled = torch.cat([pooled, geometry.to(pooled.device, pooled.dtype)], dim=1)
        return pooled, maps

    def forward(self, images: torch.Tensor, geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features, _ = self._features(images, geometry)
        return self.category(features), self.malignant(features).squeeze(1)

    def with_outline(self, images: torch.Tensor, geometry: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two heads' logits and the outline's (N x 4h x 4w for h x w feature maps)."""
        if self.outline is None:
            raise ValueError("this crop classifier was built without an outline decoder")
        features, maps = self._features(images, geometry)
        return self.category(features), self.malignant(features).squeeze(1), self.outline(maps).squeeze(1)

    def inference_state(self) -> dict[str, torch.Tensor]:
        """The weights prediction reads (the outline decoder only trains)."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("outline.")}

    def load_inference_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by ``inference_state`` (a decoder of this model's starts afresh)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        wrong = [k for k in missing if not k.startswith("outline.")] + unexpected
        if wrong:
            raise RuntimeError(f"crop classifier weights do not fit: {wrong[:5]}")


def _outline_decoder(width: int) -> nn.Module:
    """Feature maps (stride 32) -> outline logits at 4x their size: two learned upsamplings."""
    return nn.Sequential(nn.ConvTranspose2d(width, 128, 2, stride=2), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(128, 64, 2, stride=2), nn.ReLU(inplace=True),
                         nn.Conv2d(64, 1, 1))


@dataclass
class Crop:
    image: int                      # index into the loaded grey images
    box: tuple[float, float, float, float]
    category: int
    malignant: float                # 1, 0, or -1 when pathology is unknown or background


class CropSampler:
    """Lesion and background crops of in-memory grey images, jittered and augmented on the fly."""

    def __init__(self, records: list[ImageRecord], classes: list[str], settings: CropTraining,
                 train: bool) -> None:
        self.settings, self.train = settings, train
        self.images = [_grey(r.path) for r in records]
        index = {c: i for i, c in enumerate(classes)}
        self.lesions = [Crop(i, (b.x0, b.y0, b.x1, b.y1), index[taxonomy.roll_up(b.category, classes)],
                             _malignant(r.pathology)) for i, r in enumerate(records) for b in r.boxes]
        self.records = records
        self.background = index.get(BACKGROUND)
        self.rng = random.Random(settings.seed + (0 if train else 1))
        self.outlines = [_outline(r) for r in records] if settings.outline_loss and train else None

    def epoch(self) -> list[Crop]:
        crops = list(self.lesions)
        if self.background is not None:
            count = int(len(self.lesions) * self.settings.background_per_lesion)
            crops += [c for c in (self._background_crop() for _ in range(count)) if c]
        if self.train:
            self.rng.shuffle(crops)
        return crops

    def _background_crop(self) -> Crop | None:
        """A box of lesion-like size that overlaps no lesion (None if none was found quickly)."""
        share = self.settings.misplaced_share
        if share and self.lesions and self.rng.random() < share:  # no draw at 0: runs reproduce
            return self._misplaced_crop()
        i = self.rng.randrange(len(self.records))
        record, height, width = self.records[i], *self.images[i].shape
        for _ in range(10):
            side = self.rng.uniform(0.1, 0.4) * min(width, height)
            w, h = self._background_shape(side, width, height)
            x0, y0 = self.rng.uniform(0, width - w), self.rng.uniform(0, height - h)
            box = (x0, y0, x0 + w, y0 + h)
            if all(_overlap(box, (b.x0, b.y0, b.x1, b.y1)) < 0.1 for b in record.boxes):
                return Crop(i, box, self.background, -1.0)
        return None

    def _background_shape(self, side: float, width: int, height: int) -> tuple[float, float]:
        """A plain background box's width and height: a ``side`` square, or with
        ``lesion_shaped_background`` a random training lesion's height-to-width ratio at the same
        area (within the image)."""
        if not (self.settings.lesion_shaped_background and self.lesions):
            return side, side
        x0, y0, x1, y1 = self.rng.choice(self.lesions).box
        stretch = math.sqrt(max(y1 - y0, 1.0) / max(x1 - x0, 1.0))
        return min(side / stretch, width), min(side * stretch, height)

    def _misplaced_crop(self) -> Crop | None:
        """A box near a lesion, shifted and resized until it misses every lesion (IoU < 0.3): what
        a detector's poorly placed box looks like (None if none was found quickly)."""
        lesion = self.rng.choice(self.lesions)
        x0, y0, x1, y1 = lesion.box
        w, h = x1 - x0, y1 - y0
        lesions = [Box(*c.box, category="lesion") for c in self.lesions if c.image == lesion.image]
        if self.settings.partial_share and self.rng.random() < self.settings.partial_share:
            return self._partial_crop(lesion, lesions)  # no draw at 0: runs reproduce
        for _ in range(10):
            cx = (x0 + x1) / 2 + self.rng.uniform(-1.2, 1.2) * w
            cy = (y0 + y1) / 2 + self.rng.uniform(-1.2, 1.2) * h
            nw, nh = w * self.rng.uniform(0.5, 2.5), h * self.rng.uniform(0.5, 2.5)
            box = Box(cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2, category=BACKGROUND)
            if all(box.iou(other) < 0.3 for other in lesions):
                return Crop(lesion.image, (box.x0, box.y0, box.x1, box.y1), self.background, -1.0)
        return None

    def _partial_crop(self, lesion: Crop, lesions: list[Box]) -> Crop | None:
        """A box inside ``lesion`` that covers only part of it (IoU with it, its area share,
        PARTIAL_IOU) and misses every other lesion of the image as well: what a detector's box on one
        part of a lesion looks like (None if none was found quickly)."""
        x0, y0, x1, y1 = lesion.box
        w, h = x1 - x0, y1 - y0
        low, high = PARTIAL_IOU
        for _ in range(10):
            fw, fh = self.rng.uniform(0.3, 0.9), self.rng.uniform(0.3, 0.9)
            if not low <= fw * fh <= high:
                continue
            left, top = x0 + self.rng.uniform(0, 1 - fw) * w, y0 + self.rng.uniform(0, 1 - fh) * h
            box = Box(left, top, left + fw * w, top + fh * h, category=BACKGROUND)
            if all(box.iou(other) <= high for other in lesions):
                return Crop(lesion.image, (box.x0, box.y0, box.x1, box.y1), self.background, -1.0)
        return None

    def batch(self, crops: list[Crop]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The crops' pixels and, when training outlines, each crop's outline seen the same way
        (N x size x size, 0-1; -1 where the image's outline is unknown)."""
        views = [crop_view(c.box, self.settings, self.rng if self.train else None) for c in crops]
        pixels = torch.from_numpy(np.stack([v.pixels(self.images[c.image]) for c, v in zip(crops, views)]))
        if self.outlines is None:
            return pixels, None
        outlines = [self.outlines[c.image] for c in crops]
        return pixels, torch.from_numpy(np.stack([
            v.warp(o) / 255.0 if o is not None else np.full((v.size, v.size), -1.0, np.float32)
            for o, v in zip(outlines, views)]).astype(np.float32))

    def geometry(self, crops: list[Crop]) -> torch.Tensor | None:
        """Each crop's ``box_geometry`` (N x GEOMETRY_FEATURES), where the settings ask for it."""
        if not self.settings.geometry:
            return None
        return geometry_tensor([c.box for c in crops], [self.images[c.image].shape for c in crops])


@dataclass(frozen=True)
class CropView:
    """Where a crop is taken and how it is shown: the affine warp into the crop, the flips and the
    brightness gain (identity but for the warp when not training)."""

    matrix: np.ndarray
    size: int
    mirrored: bool = False
    upside_down: bool = False
    gain: float = 1.0

    def warp(self, plane: np.ndarray) -> np.ndarray:
        """``plane`` (H x W, uint8) seen through this view: float32 size x size, black outside the
        image."""
        pixels = cv2.warpAffine(plane, self.matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                                borderValue=0).astype(np.float32)
        if self.mirrored:
            pixels = pixels[:, ::-1]
        if self.upside_down:
            pixels = pixels[::-1, :]
        return pixels

    def pixels(self, grey: np.ndarray) -> np.ndarray:
        """The 3 x size x size crop of ``grey`` the classifiers read: warped, flipped, brightened."""
        pixels = self.warp(grey)
        if self.gain != 1.0:
            pixels = np.clip(pixels * self.gain, 0, 255)
        return np.repeat(pixels[None], 3, axis=0)  # the detector reads grey as three equal channels


def crop_view(box: tuple[float, float, float, float], settings: CropTraining,
              rng: random.Random | None = None) -> CropView:
    """The view of ``box`` with context, as the classifiers read it; jittered, flipped and
    brightened at random when ``rng`` is given (training)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1.0) * settings.context, max(y1 - y0, 1.0) * settings.context
    if settings.keep_aspect:
        w = h = max(w, h)
    if rng is not None:
        j = settings.jitter
        cx += rng.uniform(-j, j) * (x1 - x0)
        cy += rng.uniform(-j, j) * (y1 - y0)
        w *= rng.uniform(1 - j, 1 + j)
        h *= rng.uniform(1 - j, 1 + j)
    size = settings.crop_size
    # An affine warp samples the crop and pads outside the image with black, like the frame.
    matrix = np.array([[size / w, 0, size / 2 - cx * size / w],
                       [0, size / h, size / 2 - cy * size / h]], dtype=np.float32)
    if rng is None:
        return CropView(matrix, size)
    mirrored = rng.random() < 0.5
    upside_down = rng.random() < 0.5  # drawn either way: the setting changes nothing else
    return CropView(matrix, size, mirrored, upside_down and settings.vertical_flip, rng.uniform(0.8, 1.2))


def crop_pixels(grey: np.ndarray, box: tuple[float, float, float, float], settings: CropTraining,
                rng: random.Random | None = None) -> np.ndarray:
    """The 3 x size x size crop of ``box`` with context, as the classifiers read it; jittered,
    flipped and brightened when ``rng`` is given (training)."""
    return crop_view(box, settings, rng).pixels(grey)


def _grey(path: str) -> np.ndarray:
    return cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)


def _outline(record: ImageRecord) -> np.ndarray | None:
    """The image's lesions as uint8 0/255 (H x W): its masks united, nothing where it has no box;
    None where its boxes were drawn without outlines."""
    if not record.boxes:
        return np.zeros((record.height, record.width), np.uint8)
    if not record.masks:
        return None
    union = np.logical_or.reduce([read_mask(Path(m), (record.width, record.height)) for m in record.masks])
    return union.astype(np.uint8) * 255


def _malignant(pathology: str | None) -> float:
    return {"malignant": 1.0, "benign": 0.0}.get(pathology or "", -1.0)


def _overlap(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1e-6, (a[2] - a[0]) * (a[3] - a[1]))


def crop_classes(records: list[ImageRecord]) -> list[str]:
    """The lesion categories of the training boxes (4A/4B/4C rolled up as the detector does)."""
    from model.train import training_classes

    return training_classes(records) + [BACKGROUND]


@dataclass
class Objective:
    """What a crop classifier minimises: class-weighted cross-entropy over the categories and
    background (smoothed by ``label_smoothing``), ``ordinal`` times the squared earth mover's
    distance on lesion crops, the pathology head's binary cross-entropy where pathology is known,
    and ``outline`` times the outline decoder's binary cross-entropy where the outline is known."""

    weights: torch.Tensor          # per class, background last
    ranked: list[int]              # the lesion categories' class indices in BI-RADS rank order
    label_smoothing: float = 0.0
    ordinal: float = 0.0
    outline: float = 0.0

    @classmethod
    def of(cls, classes: list[str], weights: torch.Tensor, settings: CropTraining) -> Objective:
        ranked = sorted((i for i, c in enumerate(classes) if c != BACKGROUND), key=lambda i: taxonomy.rank(classes[i]))
        return cls(weights, ranked, settings.label_smoothing, settings.ordinal_loss, settings.outline_loss)

    def __call__(self, model: CropClassifier, batch: torch.Tensor, crops: list[Crop],
                 outlines: torch.Tensor | None = None, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``batch`` (the pixels of ``crops``); ``outlines`` and ``geometry`` as the
        sampler gives them."""
        if self.outline and outlines is not None:
            logits, malignant, drawn = model.with_outline(batch, geometry)
        else:
            (logits, malignant), drawn = model(batch, geometry), None
        logits = logits.float()
        labels = torch.tensor([c.category for c in crops], device=batch.device)
        loss = nn.functional.cross_entropy(logits, labels, weight=self.weights, label_smoothing=self.label_smoothing)
        if self.ordinal:
            loss = loss + self.ordinal * self.earth_movers(logits, labels)
        known = torch.tensor([c.malignant >= 0 for c in crops], device=batch.device)
        if known.any():
            target = torch.tensor([c.malignant for c in crops], device=batch.device)[known]
            loss = loss + nn.functional.binary_cross_entropy_with_logits(malignant.float()[known], target)
        if drawn is not None:
            loss = loss + self.outline * self.outline_error(drawn.float(), outlines.to(drawn.device))
        return loss

    @staticmethod
    def outline_error(drawn: torch.Tensor, outlines: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the decoded outlines (N x h x w logits) against the crops' outlines
        (N x size x size, -1 where unknown) shrunk to h x w; 0 where none is known."""
        known = outlines[:, 0, 0] >= 0
        if not known.any():
            return drawn.new_zeros(())
        target = nn.functional.interpolate(outlines[known, None], size=drawn.shape[-2:], mode="area")[:, 0]
        return nn.functional.binary_cross_entropy_with_logits(drawn[known], target)

    def earth_movers(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over lesion crops of the squared distance between the predicted cumulative
        distribution over the categories (background left out) and the truth's step."""
        ranked = torch.tensor(self.ranked, device=logits.device)
        lesion = torch.isin(labels, ranked)
        if not lesion.any():
            return logits.new_zeros(())
        predicted = torch.softmax(logits[lesion][:, ranked], dim=1).cumsum(1)
        truth = (labels[lesion, None] == ranked[None]).float().cumsum(1)
        return ((predicted - truth) ** 2).sum(1).mean()


def _step(model: CropClassifier, sampler: CropSampler, chunk: list[Crop], optimizer, objective: Objective,
          settings: CropTraining, device: str) -> float:
    """One optimizer step on the crops ``chunk``; its loss."""
    batch, outlines = sampler.batch(chunk)
    batch = batch.to(device, memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=settings.bf16):
        loss = objective(model, batch, chunk, outlines, sampler.geometry(chunk))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _batches(crops: list[Crop], batch_size: int) -> list[list[Crop]]:
    chunks = [crops[start:start + batch_size] for start in range(0, len(crops), batch_size)]
    return [chunk for chunk in chunks if len(chunk) >= 2]  # batch-norm needs more than one sample


def _epoch(model: CropClassifier, sampler: CropSampler, optimizer, schedule, objective: Objective,
           settings: CropTraining, device: str) -> float:
    """One pass over freshly drawn crops; the mean loss."""
    model.train()
    total, seen = 0.0, 0
    for chunk in _batches(sampler.epoch(), settings.batch_size):
        loss = _step(model, sampler, chunk, optimizer, objective, settings, device)
        if schedule.last_epoch + 1 < schedule.total_steps:
            schedule.step()
        total, seen = total + loss * len(chunk), seen + len(chunk)
    return total / max(1, seen)


def _optimizer(model: CropClassifier, settings: CropTraining) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=settings.max_lr, momentum=0.9, nesterov=True,
                           weight_decay=settings.weight_decay)


def fit_crop_classifier(model: CropClassifier, records: list[ImageRecord], classes: list[str],
                        settings: CropTraining, device: str,
                        progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` on crops of ``records`` (classes: categories then background); the
    per-epoch history."""
    torch.manual_seed(settings.seed)
    sampler = CropSampler(records, classes, settings, train=True)
    counts = np.bincount([c.category for c in sampler.lesions], minlength=len(classes)).astype(float)
    counts[-1] = len(sampler.lesions) * settings.background_per_lesion
    # Class-weighted: the majority category must not win by default (the detector's failure).
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), dtype=torch.float32,
                           device=device)
    objective = Objective.of(classes, weights, settings)
    steps_per_epoch = math.ceil(len(sampler.lesions) * (1 + settings.background_per_lesion)
                                / settings.batch_size)
    optimizer = _optimizer(model, settings)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.max_lr,
                                                   total_steps=settings.epochs * steps_per_epoch + 1)
    history, started = [], time.perf_counter()
    log.info("training a crop classifier on %d lesion crops (%s), classes %s, %d epochs",
             len(sampler.lesions), device, classes, settings.epochs)
    for epoch in range(1, settings.epochs + 1):
        loss = _epoch(model, sampler, optimizer, schedule, objective, settings, device)
        row = {"epoch": epoch, "loss": round(loss, 4),
               "elapsed_seconds": round(time.perf_counter() - started, 1)}
        history.append(row)
        (progress or _log)(row | {"epochs": settings.epochs})
    return history


def _trunk_classifier(settings: PretrainSettings, n_classes: int, device: str) -> CropClassifier:
    cfg = trunk_config(settings.base_config)
    trunk = detectron2_trunk(cfg)
    return CropClassifier(trunk, trunk.output_shape()["res5"].channels, n_classes, cfg.MODEL.PIXEL_MEAN,
                          cfg.MODEL.PIXEL_STD, settings.outline_loss > 0,
                          settings.geometry).to(device, memory_format=torch.channels_last)


def seconds_per_epoch(records: list[ImageRecord], settings: PretrainSettings | None = None,
                      steps: int = 3) -> float:
    """This machine's time for one pretraining epoch of ``settings`` on ``records``: ``steps``
    timed batches (after one that warms up), scaled to an epoch's batches. A quick probe that lets
    scripts/reference_model.sh fit the epochs into its time budget."""
    settings = settings or PretrainSettings()
    device = resolve_device("auto")
    settings = replace(settings, bf16=use_bf16(settings.bf16, device))
    torch.manual_seed(settings.seed)
    classes = crop_classes(records)
    model = _trunk_classifier(settings, len(classes), device).train()
    sampler = CropSampler(records, classes, settings, train=True)
    optimizer = _optimizer(model, settings)
    objective = Objective.of(classes, torch.ones(len(classes), device=device), settings)
    batches = _batches(sampler.epoch(), settings.batch_size)
    seconds = []
    for chunk in batches[:steps + 1]:
        started = time.perf_counter()
        _step(model, sampler, chunk, optimizer, objective, settings, device)
        seconds.append(time.perf_counter() - started)
    timed = seconds[1:] or seconds
    return sum(timed) / len(timed) * len(batches) if timed else 0.0  # no batch: nothing to time


def pretrain(records: list[ImageRecord], out: str | Path, settings: PretrainSettings | None = None,
             holdout: list[ImageRecord] | None = None,
             progress: Callable[[dict], None] | None = None) -> Path:
    """Train the trunk on crops of ``records``; write ``out/trunk.pth`` and ``out/pretrain.json``
    (settings, per-epoch loss, and the crop classifier's BI-RADS accuracy and pathology AUC on
    ``holdout``)."""
    settings = settings or PretrainSettings()
    out = Path(out)
    StagedDirectory(out).check()
    torch.manual_seed(settings.seed)
    classes = crop_classes(records)
    device = resolve_device("auto")
    settings = replace(settings, bf16=use_bf16(settings.bf16, device))
    model = _trunk_classifier(settings, len(classes), device)
    started = time.perf_counter()
    history = fit_crop_classifier(model, records, classes, settings, device, progress)
    metrics = evaluate_crops(model, holdout, classes, settings, device) if holdout else {}
    report = {"settings": asdict(settings), "classes": classes, "train_crops": sum(len(r.boxes) for r in records),
              "history": history, "holdout": metrics,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    with StagedDirectory(out) as staging:
        torch.save({"model": trunk_state(model)}, staging / TRUNK_FILE)
        (staging / PRETRAIN_REPORT).write_text(json.dumps(report, indent=1))
    log.info("trunk written to %s (%.0f s): %s", out, report["wall_seconds"], metrics)
    return out


def trunk_state(model: CropClassifier) -> dict[str, torch.Tensor]:
    """The trunk's weights named as in a detectron2 FPN detector (frozen batch-norm buffers kept)."""
    return {TRUNK_PREFIX + name: value.detach().float().cpu().contiguous()
            for name, value in model.trunk.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def crop_opinions(model: CropClassifier, batch: torch.Tensor, flip: bool,
                  geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop of ``batch`` (and its box's ``geometry``, for a classifier that reads it): the
    softmax over the classes (background last) and P(malignant); with ``flip``, each the mean of the
    crop's and its mirror image's (the classifiers trained on both; a mirror keeps the geometry)."""
    logits, malignant = model(batch, geometry)
    classes, malignancy = torch.softmax(logits.float(), 1), torch.sigmoid(malignant.float())
    if flip:
        logits, malignant = model(batch.flip(3), geometry)
        classes = (classes + torch.softmax(logits.float(), 1)) / 2
        malignancy = (malignancy + torch.sigmoid(malignant.float())) / 2
    return classes, malignancy


class ProbabilityMean(nn.Module):
    """Crop classifiers read as one: their class and malignancy probabilities averaged, handed back
    as log-probabilities and a logit, which ``crop_opinions``' softmax and sigmoid turn back into
    the averages."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor, geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [member(images, geometry) for member in self.members]
        classes = torch.stack([torch.softmax(c.float(), 1) for c, _ in outputs]).mean(0)
        malignant = torch.stack([torch.sigmoid(m.float()) for _, m in outputs]).mean(0)
        return classes.clamp_min(1e-12).log(), torch.logit(malignant, eps=1e-6)


@torch.no_grad()
def evaluate_crops(model: CropClassifier, records: list[ImageRecord], classes: list[str],
                   settings: CropTraining, device: str = "cpu") -> dict:
    """Held-out lesion crops: BI-RADS accuracy (background excluded; argmax and median readings)
    and pathology AUC, each crop read as ``settings.flip_at_test`` says."""
    from model.evaluation.metrics import auc

    model.eval()
    sampler = CropSampler(records, classes, settings, train=False)
    crops = sampler.lesions
    predicted, ordinal, scores = [], [], []
    for start in range(0, len(crops), settings.batch_size):
        chunk = crops[start:start + settings.batch_size]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=settings.bf16):
            batch = sampler.batch(chunk)[0].to(device, memory_format=torch.channels_last)
            probabilities, malignancy = crop_opinions(model, batch, settings.flip_at_test, sampler.geometry(chunk))
        categories = probabilities[:, :-1]  # a lesion crop is some category
        predicted += categories.argmax(1).cpu().tolist()
        ordinal += [classes.index(taxonomy.median_category(dict(zip(classes, row))))
                    for row in categories.cpu().tolist()]
        scores += malignancy.cpu().tolist()
    truth = [c.category for c in crops]
    known = [(c.malignant, s) for c, s in zip(crops, scores) if c.malignant >= 0]
    return {"crops": len(crops),
            "birads_accuracy": round(float(np.mean([p == t for p, t in zip(predicted, truth)])), 4),
            "birads_accuracy_median": round(float(np.mean([p == t for p, t in zip(ordinal, truth)])), 4),
            "pathology_auc": auc([k == 1.0 for k, _ in known], [s for _, s in known]) if known else None}


def _log(row: dict) -> None:
    log.info("crop classifier epoch %d/%d  loss %.4f  %.0f s", row["epoch"], row["epochs"], row["loss"],
             row["elapsed_seconds"])
