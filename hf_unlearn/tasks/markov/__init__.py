"""The synthetic Markov-chain unlearning task (SimNPO §7, IMU appendix B.4): data, evaluation, recipe, pipeline,
report, and `task.py`, its side of the task contract (`hf_unlearn.runtime.task`)."""

from ..._lazy import lazy_exports

_EXPORTS = {
    "CHAINS": ".data",
    "MarkovDataArguments": ".data",
    "make_markov_datasets": ".data",
    "transition_matrix": ".data",
    "initial_distribution": ".data",
    "MarkovEvaluator": ".evaluation",
    "MarkovEvalCallback": ".evaluation",
    "retain_kl_at_forget_kl": ".evaluation",
    "MarkovRecipe": ".recipe",
    "parse_markov_recipe": ".recipe",
    "MarkovTask": ".task",
    "run_markov": ".task",
    "markov_table": ".report",
    "mean_interval": ".statistics",
    "welch_interval": ".statistics",
    "plot_markov_tradeoff": ".report",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
