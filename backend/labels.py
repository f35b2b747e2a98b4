"""The project's label config <-> our BI-RADS categories.

A label matches a category by its ``predicted_values`` attribute (comma-separated categories)
or by its text: exact, case-insensitive, with or without a "BI-RADS" prefix ("BI-RADS 4A" ~ "4a").
Predictions only ever use labels that exist in the config: a subcategory rolls up to a plain "4"
label when the config has no subcategories; a category with no label is dropped (and logged).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from label_studio_sdk.label_interface import LabelInterface

from model import taxonomy

log = logging.getLogger(__name__)


class LabelConfigError(ValueError):
    """The label config cannot carry our predictions."""


@dataclass(frozen=True)
class LabelMap:
    from_name: str                 # the RectangleLabels control
    to_name: str                   # the Image object it labels
    data_key: str                  # task data field holding the image ("image" for $image)
    to_label: dict[str, str]       # category -> label text in the config
    to_category: dict[str, str]    # label text -> category

    def label_for(self, category: str) -> str | None:
        if category in self.to_label:
            return self.to_label[category]
        if category in taxonomy.SUBCATEGORIES_OF_4 and "4" in self.to_label:
            return self.to_label["4"]
        return None

    def category_of(self, label: str) -> str | None:
        return self.to_category.get(label)

    def shown_categories(self) -> list[str]:
        """The categories whose boxes can be shown (``label_for`` names them), in rank order."""
        return [c for c in sorted({*taxonomy.FULL, *taxonomy.COARSE}, key=taxonomy.rank)
                if self.label_for(c) is not None]


def _categories_of_label(text: str, attrs: dict) -> list[str]:
    """The categories a label stands for: the first of its predicted_values, its value and its name
    in results (``text``: its alias where it has one) that names any, so value="BI-RADS 3"
    alias="b3", value="Probably benign" alias="BI-RADS 3" and predicted_values left by another
    backend ("mass") beside value="BI-RADS 4" are all read."""
    predicted = attrs.get("predicted_values") or ""
    for candidates in ([v for v in predicted.split(",") if v.strip()], [attrs.get("value") or text], [text]):
        categories = []
        for candidate in candidates:
            try:
                categories.append(taxonomy.normalize(candidate))
            except taxonomy.UnknownCategory:
                pass
        if categories:
            return categories
    return []


@lru_cache(maxsize=64)  # every /predict carries the config; parse each distinct one once
def parse_label_config(config: str) -> LabelMap:
    """Find the RectangleLabels control bound to an Image and map its labels."""
    if not config or not config.strip():
        raise LabelConfigError("empty label config")
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises various parser errors
        raise LabelConfigError(f"label config is not valid XML: {exc}") from None
    images = {o.name: o for o in interface.objects if o.tag == "Image"}
    without_birads = []  # RectangleLabels for something else (calipers, artefacts): the next one may do
    for control in interface.controls:
        if control.tag != "RectangleLabels":
            continue
        target = next((name for name in control.to_name if name in images), None)
        if target is None:
            continue
        to_label: dict[str, str] = {}
        to_category: dict[str, str] = {}
        for text, label in control.labels_attrs.items():
            for category in _categories_of_label(text, label.attr):
                to_label.setdefault(category, text)
                to_category.setdefault(text, category)
                # annotations made before the alias was added carry the value
                to_category.setdefault(label.attr.get("value") or text, category)
        if not to_label:
            without_birads.append(control.name)
            continue
        if "valueList" in images[target].attr or not re.fullmatch(r"\$[\w-]+", images[target].value or ""):
            raise LabelConfigError(f"Image '{target}' takes its image from {images[target].value!r}: only one "
                                   "image per task, named by a task data field (value=\"$image\"), can be "
                                   "pre-annotated")
        return LabelMap(from_name=control.name, to_name=target,
                        data_key=images[target].value.lstrip("$"), to_label=to_label,
                        to_category=to_category)
    if without_birads:
        raise LabelConfigError(f"RectangleLabels '{without_birads[0]}' has no BI-RADS labels "
                               "(expected e.g. 'BI-RADS 3', or predicted_values=\"3\")")
    raise LabelConfigError("label config has no RectangleLabels bound to an Image")
