"""IAU, the gradient-restricted loss and MU-Mis on a tiny GPT-2, against explicit and brute-force computations."""

import copy

import pytest
import torch

from hf_unlearn import (
    GradientRestriction,
    GradientRestrictionTrainer,
    IAUConfig,
    IAUTrainer,
    MUMisConfig,
    MUMisTrainer,
)
from hf_unlearn.trainers.gradient_restriction import double_backward_attention, gradient_restricted_loss
from hf_unlearn.trainers.iau_trainer import iau_loss
from hf_unlearn.trainers.mumis_trainer import mumis_loss
from hf_unlearn.utils import sequence_nll

from .conftest import tiny_gpt2

COMMON = {"report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1}
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def exact_model(seed: int = 0):
    """float64 and no dropout: comparisons with explicit computations can be tight."""
    return tiny_gpt2(seed, **NO_DROPOUT).double()


def example_nll(model, example) -> torch.Tensor:
    """Length-normalised answer NLL of one unpadded example."""
    ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
    nll, count = sequence_nll(model(input_ids=ids).logits, labels)
    return (nll / count).squeeze(0)


def explicit_iau_step(model, forget, retain, lr, normalization):
    """θ − η(Σ_Dr ∇ℓ − Σ_Df ∇ℓ), one example at a time (IAU eq. 8; "mean": each sum over its set's size)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for dataset, sign in ((retain, 1.0), (forget, -1.0)):
        scale = sign / len(dataset) if normalization == "mean" else sign
        for example in dataset:
            grads = torch.autograd.grad(example_nll(model, example), params)
            total = [t + scale * g for t, g in zip(total, grads)]
    with torch.no_grad():
        for p, t in zip(params, total):
            p.sub_(lr * t)


# ----- IAU --------------------------------------------------------------------------------------------------------


def test_iau_loss_by_hand():
    forget, retain = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0])
    assert iau_loss(forget, retain, 4, 10, "sum").item() == pytest.approx(2 + 3 - 1 - 4)
    assert iau_loss(forget, retain, 4, 10, "mean").item() == pytest.approx((2 + 3) / 10 - (1 + 4) / 4)
    # A micro-batch holding one set only gives that set's share.
    assert iau_loss(forget, retain[:0], 4, 10, "mean").item() == pytest.approx(-(1 + 4) / 4)


@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_iau_steps_equal_the_explicit_formula(normalization, forget_dataset, retain_dataset, tmp_path):
    """Micro-batches of 3 mixing both sets, accumulated over one pass (7 micro-batches, the last partial), give exactly
    eq. 8; `max_steps=2` applies it twice, at the updated θ."""
    model = exact_model()
    lr = 0.01 if normalization == "sum" else 0.1
    for steps in (1, 2):
        args = IAUConfig(
            output_dir=str(tmp_path), learning_rate=lr, normalization=normalization, max_steps=steps,
            per_device_train_batch_size=3, **COMMON,
        )  # fmt: skip
        trained = copy.deepcopy(model)
        trainer = IAUTrainer(trained, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset)
        trainer.train()
        assert trainer.args.gradient_accumulation_steps == 7 and trainer.state.global_step == steps
        expected = copy.deepcopy(model)
        for _ in range(steps):
            explicit_iau_step(expected, forget_dataset, retain_dataset, lr, normalization)
        moved = max((a - b).abs().max().item() for a, b in zip(expected.parameters(), model.parameters()))
        assert moved > 1e-3
        # The NLL is computed in fp32 (`sequence_nll`), so 1/|D| scales round at ~1e-8 of the step.
        for a, b in zip(trained.parameters(), expected.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


def test_iau_needs_retain_data_and_checks_its_config(forget_dataset, tmp_path):
    args = IAUConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="IAU needs a retain_dataset"):
        IAUTrainer(tiny_gpt2(), args, forget_dataset=forget_dataset)
    with pytest.raises(ValueError, match="normalization"):
        IAUConfig(output_dir="x", normalization="token")
    with pytest.raises(ValueError, match="warm-up"):
        IAUConfig(output_dir="x", warmup_steps=0.1)
    with pytest.raises(ValueError, match="retain_loss"):
        IAUConfig(output_dir="x", retain_loss="nll")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        IAUConfig(output_dir="x", gradient_accumulation_steps=4)


def test_iau_head_only_and_retain_subset(forget_dataset, retain_dataset, tmp_path):
    model = tiny_gpt2(**NO_DROPOUT)
    args = IAUConfig(
        output_dir=str(tmp_path), learning_rate=0.01, trainable="head", max_retain_examples=5,
        per_device_train_batch_size=4, **COMMON,
    )  # fmt: skip
    before = copy.deepcopy(model)
    trainer = IAUTrainer(model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset)
    assert len(trainer.retain_dataset) == 5 and len(trainer.train_dataset) == 8 + 5
    trainer.train()
    assert not torch.equal(model.lm_head.weight, before.lm_head.weight)
    assert torch.equal(model.transformer.wte.weight, before.transformer.wte.weight)  # untied, untouched
    assert torch.equal(model.transformer.h[0].mlp.c_fc.weight, before.transformer.h[0].mlp.c_fc.weight)


# ----- gradient restriction ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "per_tensor"])
def test_gradient_restricted_loss_gradient_matches_finite_differences(norm, retain_dataset):
    """d/dθ (ℓ + α‖∇_θ ℓ‖) by double backward equals central differences of θ ↦ ℓ(θ) + α‖∇_θ ℓ(θ)‖."""
    model = exact_model()
    params = list(model.parameters())
    ids = torch.tensor([retain_dataset[i]["input_ids"] for i in range(4)])  # (4, 8)
    weight = 0.3

    def value(restricted: bool) -> torch.Tensor:
        with double_backward_attention():
            logits = model(input_ids=ids).logits[:, :-1]  # float64 throughout (finite differences need it)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            return gradient_restricted_loss(loss, params, weight, norm)[0] if restricted else loss

    total = value(True)
    grads = torch.autograd.grad(total, params)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
        eps = 1e-6  # central differences err by O(eps²): 1e-8 relative here
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(sign * eps * d)
            values.append(value(True).item())
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(sign * eps * d)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-6)
    # The penalty is really there: α‖∇ℓ‖ with the norm computed independently.
    plain = torch.autograd.grad(value(False), params)
    norms = torch.stack([g.norm() for g in plain])
    expected = norms.norm() if norm == "l2" else norms.sum()
    assert (total - value(False)).item() == pytest.approx(weight * expected.item(), rel=1e-10)


def test_gradient_restriction_trainer_logs_its_norm_and_weight_zero_is_plain_training(retain_dataset, tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_unlearn.data.pairing import pad_examples

    def train(trainer_class, **kwargs):
        model = tiny_gpt2(**NO_DROPOUT)
        args = TrainingArguments(
            output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
            remove_unused_columns=False, **COMMON,
        )  # fmt: skip
        trainer = trainer_class(
            model=model, args=args, train_dataset=retain_dataset,
            data_collator=lambda rows: pad_examples(rows, 10), **kwargs,
        )  # fmt: skip
        trainer.train()
        return model, trainer

    plain, _ = train(Trainer)
    zero, _ = train(GradientRestrictionTrainer, gradient_restriction=GradientRestriction(weight=0.0))
    restricted, trainer = train(GradientRestrictionTrainer, gradient_restriction=GradientRestriction(weight=0.5))
    for a, b in zip(plain.parameters(), zero.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(plain.lm_head.weight, restricted.lm_head.weight)
    assert all(entry["gradient_restriction_norm"] > 0 for entry in trainer.state.log_history if "loss" in entry)
    with pytest.raises(ValueError, match="weight"):
        GradientRestriction(weight=-1.0)


# ----- MU-Mis ------------------------------------------------------------------------------------------------------


def brute_force_sensitivity(model, example, position, token, output) -> float:
    """‖∇_x f_token‖² at `position` of one unpadded sequence, x its input embeddings (a leaf)."""
    embeds = model.get_input_embeddings()(torch.tensor([example["input_ids"]])).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[0, position]
    scores = torch.log_softmax(logits, -1) if output == "logprob" else logits
    (grad,) = torch.autograd.grad(scores[token], embeds)
    return grad.pow(2).sum().item()


def test_mumis_loss_by_hand():
    target = torch.tensor([3.0, 1.0, 4.0, 2.0])
    other = torch.tensor([1.0, 1.0, 1.0, 0.0])
    example = torch.tensor([0, 0, 1, 2])
    loss, per_example = mumis_loss(target, other, example, 3)
    torch.testing.assert_close(per_example, torch.tensor([1.0, 3.0, 2.0]))
    assert loss.item() == pytest.approx(2.0)
    # Its share of a step of 6 sequences.
    assert mumis_loss(target, other, example, 3, num_items_in_batch=6)[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("output", ["logit", "logprob"])
def test_mumis_objective_equals_brute_force_input_gradients(output, forget_dataset, tmp_path):
    """The batched objective (padding, one row per position, one backward for all rows, kept logits only) equals
    per-sequence, per-position input gradients of the unpadded sequences, with the same draws of c'."""
    model = exact_model()
    args = MUMisConfig(output_dir=str(tmp_path), sensitivity_output=output, **COMMON)
    trainer = MUMisTrainer(model, args, forget_dataset=forget_dataset)
    examples = [forget_dataset[i] for i in range(5)]
    batch = trainer.data_collator([{"forget": e, "index": i} for i, e in enumerate(examples)])["forget"]
    index = torch.arange(len(examples))
    rows, positions, targets, others = trainer.sample_rows(batch["labels"], index)
    loss, per_example, *_ = trainer.objective(model, batch, index)  # the same draws: (seed, step, index)

    answer_positions = [sum(label != -100 for label in e["labels"][1:]) for e in examples]
    assert torch.bincount(rows).tolist() == answer_positions  # every answer position, once
    assert (others != targets).all()
    expected = torch.zeros(len(examples), dtype=torch.float64)
    for row, position, target, other in zip(rows.tolist(), positions.tolist(), targets.tolist(), others.tolist()):
        example = examples[row]
        assert example["labels"][position + 1] == target
        difference = brute_force_sensitivity(model, example, position, target, output) - brute_force_sensitivity(
            model, example, position, other, output
        )
        expected[row] += difference / answer_positions[row]
    torch.testing.assert_close(per_example, expected, rtol=1e-9, atol=1e-12)
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-9)
    assert loss.requires_grad  # the double backward is possible


def test_mumis_cheap_variant_draws_k_positions_per_sequence(forget_dataset, tmp_path):
    args = MUMisConfig(output_dir=str(tmp_path), positions_per_sequence=2, **COMMON)
    trainer = MUMisTrainer(tiny_gpt2(), args, forget_dataset=forget_dataset)
    batch = trainer.data_collator([{"forget": forget_dataset[i], "index": i} for i in range(4)])["forget"]
    rows, positions, targets, others = trainer.sample_rows(batch["labels"], torch.arange(4))
    assert torch.bincount(rows).tolist() == [2, 2, 2, 2]
    # Each sequence's draws depend on its index only, not on the rest of the batch.
    alone = trainer.sample_rows(batch["labels"][2:3], torch.tensor([2]))
    assert alone[1].tolist() == positions[rows == 2].tolist() and alone[3].tolist() == others[rows == 2].tolist()
    assert (batch["labels"][rows, positions + 1] == targets).all() and (targets != -100).all()
    assert (others != targets).all() and ((others >= 0) & (others < 11)).all()


def test_mumis_stops_once_the_drop_reaches_delta(forget_dataset, tmp_path):
    delta = 0.3
    args = MUMisConfig(
        output_dir=str(tmp_path), learning_rate=2e-2, max_steps=40, per_device_train_batch_size=4,
        stop_threshold=delta, stop_check_steps=1, **COMMON,
    )  # fmt: skip
    trainer = MUMisTrainer(tiny_gpt2(**NO_DROPOUT), args, forget_dataset=forget_dataset)
    trainer.train()
    drops = [check["drop"] for check in trainer.stop_history[1:]]
    assert trainer.state.global_step < 40 and len(drops) == trainer.state.global_step
    assert drops[-1] >= delta and all(drop < delta for drop in drops[:-1])
    logged = [entry for entry in trainer.state.log_history if "mumis/objective_drop" in entry]
    assert logged[-1]["mumis/objective_drop"] == pytest.approx(drops[-1])
    # Without δ every step runs.
    args = MUMisConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, **COMMON)
    trainer = MUMisTrainer(tiny_gpt2(), args, forget_dataset=forget_dataset)
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.initial_objective is None


def test_mumis_trains_a_lora_adapter_only(forget_dataset, tmp_path):
    from peft import LoraConfig

    model = tiny_gpt2()
    base = copy.deepcopy(model)
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    args = MUMisConfig(
        output_dir=str(tmp_path), learning_rate=1e-2, max_steps=2, positions_per_sequence=1,
        per_device_train_batch_size=4, **COMMON,
    )  # fmt: skip
    trainer = MUMisTrainer(model, args, forget_dataset=forget_dataset, peft_config=lora)
    trainer.train()
    adapters = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert adapters and all(p.abs().sum() > 0 for p in adapters)  # lora_B starts at zero: it moved
    merged = trainer.model.merge_and_unload()
    assert torch.equal(merged.lm_head.weight, base.lm_head.weight)


def test_mumis_config_validation():
    with pytest.raises(ValueError, match="sensitivity_output"):
        MUMisConfig(output_dir="x", sensitivity_output="prob")
    with pytest.raises(ValueError, match="positions_per_sequence"):
        MUMisConfig(output_dir="x", positions_per_sequence=0)
    with pytest.raises(ValueError, match="stop_threshold"):
        MUMisConfig(output_dir="x", stop_threshold=-1.0)
    with pytest.raises(ValueError, match="stop_threshold_type"):
        MUMisConfig(output_dir="x", stop_threshold_type="percent")


# ----- the Markov recipe -------------------------------------------------------------------------------------------


def test_markov_recipe_with_iau_gr_and_mumis(tmp_path, capsys):
    """IAU on the plain and on the gradient-restricted original, MU-Mis, in one tiny recipe; a re-run reuses all three
    trained models; `original: gradient_restricted` without the section is refused before training."""
    import json

    import yaml

    from hf_unlearn.cli import main

    from .test_cli import TINY

    recipe = {
        **TINY,
        "original_gradient_restriction": {"weight": 0.01},
        "methods": {
            "IAU": {"per_device_train_batch_size": 64, "learning_rate": 0.5, "normalization": "mean", "max_steps": 1},
            "IAU+GR": {
                "method": "IAU", "original": "gradient_restricted", "per_device_train_batch_size": 64,
                "learning_rate": 0.5, "normalization": "mean", "max_steps": 1,
            },
            "MU-Mis": {"positions_per_sequence": 2, "stop_threshold": 0.9, "stop_check_steps": 1},
        },
    }  # fmt: skip
    path, out = tmp_path / "recipe.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["training"]) == {"original", "retrained", "original_gr"}
    assert results["original_gr"]["forget_loss"] != results["original"]["forget_loss"]
    assert results["methods"]["IAU+GR"]["original"] == "gradient_restricted"
    assert results["methods"]["IAU"]["steps"] == 1 and len(results["methods"]["IAU"]["history"]) == 2
    assert results["methods"]["IAU"]["forget_loss"] > results["original"]["forget_loss"]
    assert "Original (GR)" in capsys.readouterr().out
    assert main(["run", str(path), "--output-dir", str(out), "--methods", "IAU+GR"]) == 0
    assert capsys.readouterr().out.count("Reusing the cached") == 3
    # --methods runs only the stages the chosen methods need: plain IAU does not need the GR original.
    assert main(["run", str(path), "--output-dir", str(out), "--methods", "IAU"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Reusing the cached") == 2 and "original_gr" not in printed
    assert set(json.loads((out / "results.json").read_text())["training"]) == {"original", "retrained"}

    recipe.pop("original_gradient_restriction")
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(tmp_path / "bad")]) == 2
    assert "needs the recipe's original_gradient_restriction" in capsys.readouterr().err


def test_embedded_markov_recipe_runs_iau_iau_gr_and_mumis(tmp_path, capsys):
    """`hf-unlearn run markov` plans IAU on both originals and the two MU-Mis rows, and the GR original."""
    from hf_unlearn.cli import main

    assert main(["run", "markov", "--dry-run", "--output-dir", str(tmp_path)]) == 0
    plan = capsys.readouterr().out
    assert "once more with the gradient-restricted loss" in plan
    for label, original in (("IAU", "standard"), ("IAU+GR", "gradient_restricted"), ("MU-Mis", "standard")):
        line = next(line for line in plan.splitlines() if line.strip().startswith(f"{label}:"))
        assert f"original {original}" in line
    assert "MU-Mis-logprob: MUMisConfig" in plan and "'sensitivity_output': 'logprob'" in plan
    assert "IAUConfig(lr 0.3, max_steps 1, batch 512" in plan


def test_markov_table_shows_the_gr_original_and_times():
    from hf_unlearn.tasks.markov.report import markov_table

    metrics = {"retain_loss": 2.0, "retain_kl": 0.1, "forget_loss": 3.0, "forget_kl": 1.0}
    results = {
        "original": metrics,
        "retrained": metrics,
        "original_gr": metrics,
        "training": {"original": {"seconds": 30.0}, "retrained": {"seconds": 20.0}, "original_gr": {"seconds": 77.5}},
        "methods": {"IAU+GR": {**metrics, "unlearn_seconds": 12.25}, "MU-Mis": {**metrics, "unlearn_seconds": 9.0}},
    }
    lines = markov_table(results).splitlines()
    assert "unlearn (s)" in lines[0] and "train (s)" in lines[0]
    gr = next(line for line in lines if line.startswith("| Original (GR)"))
    assert "77.500" in gr
    assert "12.250" in next(line for line in lines if line.startswith("| IAU+GR"))
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "Original", "Original (GR)", "Retrained", "IAU+GR", "MU-Mis"
    ]  # fmt: skip


# ----- `hf-unlearn finetune` with gradient restriction --------------------------------------------------------------


def test_tofu_finetune_gradient_restriction_is_opt_in_and_keeps_plain_fingerprints(tmp_path, capsys):
    """Unset, the fine-tune fingerprint has exactly its old keys (cached fine-tunes stay valid); set, the target is
    fine-tuned with ℓ + α‖∇_θ ℓ‖ into its own folder `target_gr` and its fingerprint says so."""
    import json

    from hf_unlearn.cli import main
    from hf_unlearn.runtime.cache import STAMP_FILE
    from hf_unlearn.tasks.tofu.data import select_rows
    from hf_unlearn.tasks.tofu.finetune import _finetune_fingerprint
    from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

    from .test_tofu_pipeline import tiny_recipe, write
    from .tofu_helpers import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    recipe = tiny_recipe(base, tmp_path / "out")
    recipe["models"]["retain"] = {"name_or_path": str(base)}
    recipe["finetune"]["num_train_epochs"] = 1
    plan = parse_tofu_recipe(recipe, dry_run=True)
    rows = select_rows(plan.train_data["target"], plan.data_dir)
    plain_keys = {"base", "train_data", "train_rows_sha256", "finetune", "finetune_lora", "formatting", "versions"}
    assert set(_finetune_fingerprint(plan, "target", rows, plan.base.identity())) == plain_keys
    assert "finetune_gradient_restriction" not in plan.settings()

    restricted = {**recipe, "finetune_gradient_restriction": {"weight": 0.01}}
    plan = parse_tofu_recipe(restricted, dry_run=True)
    assert _finetune_fingerprint(plan, "target", rows, plan.base.identity())["gradient_restriction"] == {
        "weight": 0.01,
        "norm": "l2",
    }
    assert main(["finetune", write(tmp_path / "r.yaml", restricted), "--only", "target"]) == 0
    folder = tmp_path / "out" / "models" / "target_gr"
    assert (folder / "model.safetensors").is_file() and not (tmp_path / "out" / "models" / "target").exists()
    stamp = json.loads((folder / STAMP_FILE).read_text())
    assert stamp["fingerprint"]["gradient_restriction"]["weight"] == 0.01
    log = json.loads((folder / "train_log.json").read_text())
    assert any(entry.get("gradient_restriction_norm", 0) > 0 for entry in log)

    models = {**restricted["models"], "target": {"name_or_path": str(base)}, "retain": {"train_data": ["forget05"]}}
    given = {**restricted, "models": models}
    assert main(["finetune", write(tmp_path / "g.yaml", given)]) == 2
    assert "finetune_gradient_restriction applies to the target" in capsys.readouterr().err
