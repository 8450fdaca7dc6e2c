"""hf-unlearn: machine unlearning for Hugging Face language models.

Public names load on first use, so `import hf_unlearn` (and the CLI) start without importing torch.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **{
        name: ".trainers"
        for name in (
            "METHODS",
            "GAConfig",
            "GATrainer",
            "GradDiffConfig",
            "GradDiffTrainer",
            "GradientRestriction",
            "GradientRestrictionTrainer",
            "IAUConfig",
            "IAUTrainer",
            "IMUConfig",
            "IMUTrainer",
            "MUMisConfig",
            "MUMisTrainer",
            "NPOConfig",
            "NPOTrainer",
            "SimNPOConfig",
            "SimNPOTrainer",
            "UnlearnConfig",
            "UnlearnTrainer",
        )
    },
    **{
        name: ".callbacks"
        for name in ("CollapseGuardCallback", "EvalMetricsCallback", "StopAtTargetCallback", "StopOnMetricCallback")
    },
    "ChatFormat": ".data",
    "format_qa": ".data",
    "tokenize_dataset": ".data",
    "influence_weights": ".influence",
    "lm_head_influence": ".influence",
    "load_head_delta": ".hub",
    "load_model_and_tokenizer": ".models",
    "TofuEvalArguments": ".evaluation.tofu",
    "TofuEvalCallback": ".evaluation.tofu",
    "evaluate_tofu": ".evaluation.tofu",
    "TofuFormat": ".data.tofu",
    "load_tofu": ".data.tofu",
    "make_markov_datasets": ".tasks.markov",
}
__all__ = [*_EXPORTS, "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
