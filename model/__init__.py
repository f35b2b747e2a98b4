"""The detectron2 side: BI-RADS lesion detection. Knows nothing of Label Studio.

Importing any ``model`` module first applies ``model.compat`` (the detectron2 0.6 fixes), so no
module can reach detectron2 before them, whatever order an import sorter puts imports in.
"""

from model import compat  # noqa: F401
