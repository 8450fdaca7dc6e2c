"""The MUSE benchmark (News, Books): data, recipe, pipeline, report, and `task.py`, its side of the task contract
(`hf_unlearn.runtime.task`). The metrics are core: `hf_unlearn.evaluation.muse`."""

from ..._lazy import lazy_exports

_EXPORTS = {
    "HUB_IDS": ".data",
    "TextSelection": ".data",
    "load_muse": ".data",
    "muse_eval_data": ".data",
    "select_texts": ".data",
    "MuseRecipe": ".recipe",
    "parse_muse_recipe": ".recipe",
    "MuseTask": ".task",
    "run_muse": ".task",
    "muse_table": ".report",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
