"""hf-unlearn: machine unlearning for Hugging Face language models.

Public names load on first use, so `import hf_unlearn` (and the CLI) start without importing torch.
"""

from ._lazy import lazy_exports
from .trainers import _EXPORTS as _TRAINER_EXPORTS

__version__ = "0.1.0"

# Every method's config and trainer (and METHODS, UnlearnConfig, UnlearnTrainer, ...), as `hf_unlearn.trainers` lists
# them: a new method is exported here without another line. Losses stay in `hf_unlearn.trainers`.
_TRAINER_NAMES = sorted(name for name in _TRAINER_EXPORTS if name[0].isupper())

_EXPORTS = {
    **{name: ".trainers" for name in _TRAINER_NAMES},
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
