"""CMR imaging tools: load and QC a cine study, segment it, measure cardiac function."""

# isort: off
# The import order is the tools' registration order, which is the order tools are listed in.
from ._bullseye import BullseyeFigure
from ._lge import LgeBurden, LgeBurdenInput, lge_burden
from ._regional import RegionalFunction, RegionalFunctionInput, aha_segments, regional_function
from ._export import SegmentFileInput, SegmentFileResult, segment_file
from ._function import CardiacFunction, CardiacFunctionInput, cardiac_function, mosteller_bsa
from ._load import LoadStudyInput, StudySummary, load_stack, load_study
from ._sample import SAMPLE_IDENTIFIERS, ensure_sample
from ._segment import SegmentationResult, SegmentInput, segment
# isort: on

__all__ = [
    "BullseyeFigure", "LgeBurden", "LgeBurdenInput", "RegionalFunction", "RegionalFunctionInput", "aha_segments",
    "lge_burden", "regional_function",
    "CardiacFunction", "CardiacFunctionInput", "LoadStudyInput", "SAMPLE_IDENTIFIERS", "SegmentInput",
    "SegmentationResult", "StudySummary", "cardiac_function", "ensure_sample", "load_stack", "load_study",
    "mosteller_bsa", "segment", "segment_file", "SegmentFileInput", "SegmentFileResult",
]
