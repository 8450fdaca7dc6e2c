"""TOFU (Maini et al., 2024) as a benchmark run: row selections, recipe, fine-tuning, the cached evaluation stage,
pipeline and reports. The data and the evaluation suite themselves are core: `hf_unlearn.data.tofu`,
`hf_unlearn.evaluation.tofu`."""

from ..._lazy import lazy_exports

_EXPORTS = {
    "Selection": ".data",
    "select_rows": ".data",
    "evaluate_tofu_stage": ".eval_stage",
    "parse_tofu_recipe": ".recipe",
    "TofuTask": ".task",
    "run_tofu": ".task",
    "run_finetune": ".pipeline",
    "tofu_table": ".report",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
