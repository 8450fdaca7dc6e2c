"""TOFU (Maini et al., 2024): data, evaluation (`evaluate_tofu`), recipe, fine-tuning, pipeline and reports."""

from ..._lazy import lazy_exports

_EXPORTS = {
    "TOFU_CONFIGS": ".data",
    "Selection": ".data",
    "TofuFormat": ".data",
    "load_tofu": ".data",
    "select_rows": ".data",
    "tofu_split_configs": ".data",
    "TofuEvalArguments": ".evaluation",
    "TofuEvalCallback": ".callbacks",
    "evaluate_tofu": ".evaluation",
    "RetainReference": ".results",
    "load_retain_reference": ".results",
    "parse_tofu_recipe": ".recipe",
    "TofuTask": ".task",
    "run_tofu": ".task",
    "run_finetune": ".task",
    "tofu_table": ".report",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
