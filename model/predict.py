"""Inference: load a model directory once, then detect lesions in batches of images."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from model import box_voting, modeldir
from model.box_classifier import BoxClassifier
from model.category_reading import SERVED_READING, reader, relabelled
from model.config import bf16_supported, resolve_device
from model.io import DataError, read_image
from model.malignancy_reading import SERVED_READING as SERVED_MALIGNANCY
from model.malignancy_reading import check, reread
from model.merge import merged, one_box_per_lesion
from model.records import Box, Detection
from model.roi_pooling import pool_boxes

log = logging.getLogger(__name__)
ImageInput = str | Path | np.ndarray


def _same_size(inputs: Sequence[dict]) -> list[list[int]]:
    """The inputs' indices, grouped by the network's input size. detectron2 pads a batch to its
    largest image, and GroupNorm's statistics (the recipe's FPN and box head) take the padding in:
    batched with a larger image, a task's boxes and categories would depend on which images happen
    to share its request. One forward per size keeps each image's detections its own."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(inputs):
        groups.setdefault(tuple(item["image"].shape[-2:]), []).append(index)
    return list(groups.values())


def extend_inference(box_predictor: torch.nn.Module, voting_iou: float | None,
                     category_voting_iou: float | None = None) -> None:
    """Make the box head attach to each detection its full softmax (``class_scores``, K+1 columns)
    and, with ``voting_iou``, its place by its proposals' vote (``voted_boxes``, ``model.box_voting``);
    with ``category_voting_iou`` that softmax is its proposals' vote too (``voted_probabilities``).

    detectron2 keeps only the winning class per box; the whole distribution is what ranks tasks by
    uncertainty and splits BI-RADS 4. ``fast_rcnn_inference`` already returns the kept proposals'
    indices, so we look their probabilities up instead of re-implementing the inference. The vote
    leaves ``pred_boxes`` the detector's own: the box classifier reads its crops there, and the boxes
    move only once every verdict is in (``Predictor._detection``).
    """
    original = box_predictor.inference

    def inference(predictions, proposals):
        # scores' softmax and boxes' decoding in float32: under CPU bf16 autocast they would stay
        # bfloat16, the scores on a 0.002-0.008 grid near 0.5 (CUDA's autocast lifts softmax itself)
        predictions = tuple(p.float() for p in predictions)
        results, kept = original(predictions, proposals)
        # detectron2 first drops the proposals with a non-finite box or score: its indices count the rest
        finite = [(boxes[rows], probs[rows]) for boxes, probs in zip(
                      box_predictor.predict_boxes(predictions, proposals),
                      box_predictor.predict_probs(predictions, proposals))
                  for rows in [torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)]]
        for instances, indices, (_, probs) in zip(results, kept, finite):
            instances.class_scores = probs[indices].float()
        if voting_iou is None and category_voting_iou is None:
            return results, kept
        for instances, (boxes, probs), proposal in zip(results, finite, proposals):
            _vote(instances, boxes, probs, proposal.image_size, voting_iou, category_voting_iou)
        return results, kept

    box_predictor.inference = inference


def _vote(instances, boxes: torch.Tensor, probs: torch.Tensor, image_size: tuple[int, int],
          voting_iou: float | None, category_voting_iou: float | None) -> None:
    """Move ``instances``' boxes (and, with ``category_voting_iou``, their class scores) to the vote
    of the proposals around them, in float32 whatever autocast the forward pass runs under (bf16
    would put the corners on a 2-4 px grid)."""
    with torch.autocast(boxes.device.type, enabled=False):
        clipped = Boxes(boxes.float().reshape(-1, 4))
        clipped.clip(image_size)
        places, probs = clipped.tensor.view(len(boxes), -1), probs.float()
        own = instances.pred_boxes.tensor.float()
        voting = box_voting.voters(places, probs)
        if category_voting_iou is not None:
            instances.class_scores = box_voting.voted_probabilities(own, instances.class_scores, voting,
                                                                    category_voting_iou)
        if voting_iou is not None:
            instances.voted_boxes = Boxes(box_voting.vote(own, voting.places, voting.weights, voting_iou))


def as_rgb(image: ImageInput) -> np.ndarray:
    """RGB uint8 HxWx3 from a path or an array (grayscale HxW, HxWx1, RGB or RGBA)."""
    if not isinstance(image, np.ndarray):
        return read_image(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    image = image[:, :, :3]  # alpha is no pixel: never part of the stretch below
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = ((image - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


# In float32 on a CPU the box head is about half of a prediction's time, in proportion to the
# proposals it reads: 75 took a prediction from 0.475x to 0.239x of DefaultPredictor's at 800 px
# (docs/results.md item 76), and on a whole reference run moved no accuracy figure past the rule
# written before it (item 82). bf16 and GPUs keep the model's own count: there the head is cheap.
FLOAT32_CPU_PROPOSALS = 75


def default_proposals(cfg: CfgNode, device: str, bf16: bool) -> int:
    """The proposals the box head reads when none are asked for (see FLOAT32_CPU_PROPOSALS)."""
    own = cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    return min(own, FLOAT32_CPU_PROPOSALS) if device == "cpu" and not bf16 else own


class Predictor:
    """Detects lesions and names their BI-RADS category.

    ``bf16=None`` turns bfloat16 autocast + channels_last on where the hardware runs bf16
    natively (2-3x faster on AVX-512 BF16/AMX CPUs, same detections within a point of AP50).
    ``merge_iou``: boxes of different categories overlapping this much are one lesion (None: off;
    ``model.merge``), merged where the detector put them and, with box voting, again where voted.
    ``box_classifier``: re-name boxes with the model's box classifier where it has one
    (``model.box_classifier``); False reads the detector alone.
    ``box_voting_iou``: move each box to the vote of the proposals overlapping it this much
    (``model.box_voting``; None: off), after the box classifier has named and ranked it where the
    detector put it (docs/results.md items 18-19).
    ``category_voting_iou``: give each box the mean class scores of the proposals overlapping it
    this much, weighted by their P(lesion) (``box_voting.voted_probabilities``; None: off, its own).
    ``category_reading``: how each box's category is read from its class scores, last
    (``model.category_reading``: argmax, or their median in rank order).
    ``malignancy_reading``: how each box's P(malignant) is read where the box classifier gives one
    (``model.malignancy_reading``: its pathology head alone, or averaged with the box's categories).
    ``proposals``: how many of the RPN's proposals the box head reads per image, which are also box
    voting's voters (the head's time is proportional to them; docs/results.md item 76); None:
    ``FLOAT32_CPU_PROPOSALS`` where a CPU predicts in float32, else the model's config's.
    """

    def __init__(self, model_dir: str | Path, device: str = "auto", bf16: bool | None = None,
                 score_threshold: float = 0.5, max_boxes: int = 10,
                 image_size: int | None = None, merge_iou: float | None = 0.5,
                 box_classifier: bool = True, box_voting_iou: float | None = None,
                 category_voting_iou: float | None = None, category_reading: str = SERVED_READING,
                 malignancy_reading: str = SERVED_MALIGNANCY, proposals: int | None = None) -> None:
        if proposals is not None and proposals < 1:
            raise ValueError(f"proposals must be at least 1, not {proposals}")
        reader(category_reading)  # an unknown name fails here, not at the first image
        self.category_reading = category_reading
        self.malignancy_reading = check(malignancy_reading)
        self.model_dir = Path(model_dir)
        self.info = modeldir.read_info(self.model_dir)
        self.classes = list(self.info.classes)
        cfg = get_cfg()
        try:
            cfg.merge_from_file(str(self.model_dir / modeldir.CONFIG))
        except (OSError, ValueError, KeyError, AssertionError, yaml.YAMLError) as exc:  # yacs asserts
            raise DataError(f"{self.model_dir / modeldir.CONFIG}: not a readable model config ({exc})") from None
        cfg.MODEL.DEVICE = resolve_device(device)
        cfg.MODEL.WEIGHTS = ""
        if image_size:  # infer at another size than the model was trained at
            cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MAX_SIZE_TEST = image_size
        self.cfg = cfg
        self.device = cfg.MODEL.DEVICE
        self.bf16 = bf16_supported(self.device) if bf16 is None else bf16
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = proposals or default_proposals(cfg, self.device, self.bf16)
        if bf16 and not bf16_supported(self.device):
            # kept (the parity test needs it), but said: emulated bf16 is many times slower
            log.warning("bf16 asked for, but this %s has no native bfloat16: it is emulated, many "
                        "times slower than float32", self.device)
        self.score_threshold = score_threshold
        self.max_boxes = max_boxes
        self.merge_iou = merge_iou
        self.model = build_model(cfg).eval()
        if self.info.settings.get("roi_align_fp32"):  # pooled as it was trained
            pool_boxes(self.model, exact_corners=True)
        self._load_weights(cfg)
        extend_inference(self.model.roi_heads.box_predictor, box_voting_iou, category_voting_iou)
        if self.bf16:
            self.model.to(memory_format=torch.channels_last)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.box_classifier = BoxClassifier.of(self.model_dir, self.classes, self.device) if box_classifier else None
        log.info("loaded %s on %s (bf16 %s, %d proposals), classes %s, box classifier %s", self.model_dir,
                 self.device, self.bf16, cfg.MODEL.RPN.POST_NMS_TOPK_TEST, self.classes,
                 "on" if self.box_classifier else "off")

    def _load_weights(self, cfg) -> None:
        """The model's weights, refused where they cannot be its own: detectron2 would only log a
        layer of another shape and leave it random (a class list that does not match the weights
        would name every box wrongly)."""
        weights = self.model_dir / modeldir.WEIGHTS
        if len(self.classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise DataError(f"{self.model_dir / modeldir.META}: {len(self.classes)} classes, but its config's "
                            f"detector has {cfg.MODEL.ROI_HEADS.NUM_CLASSES}")
        checkpointer = DetectionCheckpointer(self.model)
        try:
            incompatible = checkpointer._load_model(checkpointer._load_file(str(weights)))
        except (OSError, RuntimeError, EOFError, AssertionError, KeyError, pickle.UnpicklingError) as exc:
            raise DataError(f"{weights}: not readable weights ({exc})") from None  # missing, truncated
        if incompatible is None:
            return
        checkpointer._log_incompatible_keys(incompatible)  # what detectron2's own load says of them
        if incompatible.incorrect_shapes:
            key, theirs, ours = incompatible.incorrect_shapes[0]
            raise DataError(f"{weights}: {key} is {tuple(theirs)}, the model's config makes it {tuple(ours)} "
                            f"({len(incompatible.incorrect_shapes)} such layers): not this model's weights")

    def _input(self, rgb: np.ndarray) -> dict:
        height, width = rgb.shape[:2]
        pixels = rgb[:, :, ::-1] if self.cfg.INPUT.FORMAT == "BGR" else rgb
        pixels = self.resize.get_transform(pixels).apply_image(np.ascontiguousarray(pixels))
        tensor = torch.as_tensor(np.ascontiguousarray(pixels.transpose(2, 0, 1)), dtype=torch.float32)
        return {"image": tensor, "height": height, "width": width}

    def _image_pixels(self, boxes: Boxes, rgb: np.ndarray) -> list[list[float]]:
        """``boxes`` in the network's input pixels (as the box head gives them) in ``rgb``'s, clipped
        to it: what detectron2's postprocessing does to ``pred_boxes``, for boxes it does not know."""
        height, width = rgb.shape[:2]
        xyxy = self.resize.get_transform(rgb).inverse().apply_box(boxes.tensor.float().numpy())
        return np.clip(xyxy, 0, [width, height, width, height]).tolist()

    def _detection(self, output: dict, rgb: np.ndarray) -> Detection:
        instances = output["instances"].to("cpu")
        if self.merge_iou is not None and len(instances):
            instances = instances[one_box_per_lesion(instances.pred_boxes.tensor, instances.scores, self.merge_iou)]
        keep = instances.scores >= self.score_threshold
        instances = instances[keep][: self.max_boxes]  # sorted by score
        boxes = [Box(*(float(v) for v in xyxy), category=self.classes[int(label)], score=float(score))
                 for xyxy, label, score in zip(instances.pred_boxes.tensor.tolist(),
                                               instances.pred_classes, instances.scores)]
        class_scores = [dict(zip(self.classes, row[:-1])) for row in
                        instances.class_scores.tolist()]  # last column: background
        malignancy: list[float] = []
        ranks: list[float] = []
        if self.box_classifier is not None:
            boxes, class_scores, malignancy, ranks = self.box_classifier.refine(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), boxes, class_scores)
        height, width = rgb.shape[:2]
        detection = reread(Detection(boxes=tuple(boxes), width=width, height=height, class_scores=tuple(class_scores),
                                     malignancy=tuple(malignancy), ranks=tuple(ranks)), self.malignancy_reading)
        if instances.has("voted_boxes"):  # last: every verdict above was read at the detector's places
            detection = replace(detection, boxes=tuple(box_voting.moved(
                detection.boxes, self._image_pixels(instances.voted_boxes, rgb))))
            if self.merge_iou is not None:  # two boxes may have come to sit on one lesion
                detection = merged(detection, self.merge_iou)
        return relabelled(detection, self.category_reading)

    def with_subcategories(self, second: Predictor, cuts: tuple[float, float] | None = None):
        """Split this model's BI-RADS 4 boxes into 4A/4B/4C with ``second``, a model trained
        without BI-RADS 4 (the paper's two-model scheme); returns a callable like this one. The
        cuts: ``cuts``, else those fitted for ``second`` (``birads fit-cuts``), else the defaults."""
        from model.subcategory import SubcategorySplitter, load_cuts, require_second_model

        require_second_model(second.classes, str(second.model_dir))
        splitter = SubcategorySplitter(cuts or load_cuts(second.model_dir))

        def predict(images: Sequence[ImageInput], batch_size: int = 4) -> list[Detection]:
            arrays = [as_rgb(i) for i in images]
            return [splitter.split(d, s) for d, s in zip(self(arrays, batch_size), second(arrays, batch_size))]

        return predict

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageInput], batch_size: int = 4) -> list[Detection]:
        """Detections for each image, in order; boxes in pixels of the input image."""
        detections: list[Detection] = []
        autocast = (torch.autocast("cuda" if self.device.startswith("cuda") else "cpu",
                                   dtype=torch.bfloat16) if self.bf16 else nullcontext())
        for start in range(0, len(images), batch_size):
            rgbs = [as_rgb(image) for image in images[start:start + batch_size]]
            inputs = [self._input(rgb) for rgb in rgbs]
            found: list[Detection | None] = [None] * len(rgbs)
            with autocast:  # the box classifier, in _detection, runs under it too
                for members in _same_size(inputs):
                    outputs = self.model([inputs[i] for i in members])
                    for i, output in zip(members, outputs):
                        found[i] = self._detection(output, rgbs[i])
            detections += found
        return detections
