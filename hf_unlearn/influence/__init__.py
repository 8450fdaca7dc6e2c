"""LM-head influence for IMU (Influence-guided Machine Unlearning, arXiv:2508.01620; `docs/influence.md`).

`lm_head_influence(model, forget_dataset)` returns the removal score Δ_i of every forget sample;
`influence_weights(scores, psi="sqrt")` turns them into IMU's sample weights; `save_influence`/`load_influence`
keep scores with the arguments that produced them.
"""

from .arguments import CURVATURES, InfluenceArguments, InfluenceWeighting
from .engine import InfluenceResult, compute_influence, lm_head_influence
from .storage import (
    INFLUENCE_FILE_NAME,
    InfluenceMismatchError,
    InfluenceRecord,
    dataset_fingerprint,
    load_influence,
    save_influence,
)
from .task import CausalLMHeadTask, HeadTokens, resolve_head_parameters
from .weights import PSI_CHOICES, influence_weights

__all__ = [
    "CURVATURES",
    "INFLUENCE_FILE_NAME",
    "PSI_CHOICES",
    "CausalLMHeadTask",
    "HeadTokens",
    "InfluenceArguments",
    "InfluenceMismatchError",
    "InfluenceRecord",
    "InfluenceResult",
    "InfluenceWeighting",
    "compute_influence",
    "dataset_fingerprint",
    "influence_weights",
    "lm_head_influence",
    "load_influence",
    "resolve_head_parameters",
    "save_influence",
]
