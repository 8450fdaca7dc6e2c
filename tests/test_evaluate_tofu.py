"""`evaluate_tofu` on a tiny model and the vendored TOFU fixture: batched values equal unbatched hand computations."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from hf_unlearn.data.chat import format_qa
from hf_unlearn.data.tofu import TofuFormat
from hf_unlearn.evaluation import metrics as M
from hf_unlearn.evaluation.tofu import UTILITY_COMPONENTS, evaluate_tofu
from hf_unlearn.tasks.tofu.eval_stage import evaluate_tofu_stage
from hf_unlearn.utils import IGNORE_INDEX, token_logprobs

from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, write_fixture

TOFU = TofuFormat().chat_format().kwargs()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(tokenizer)


def unbatched(model, tokenizer, question, answer):
    """One sequence, no padding: answer log-probs and argmax predictions (end-of-turn included)."""
    example = format_qa(tokenizer, question, answer, **TOFU)
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([example["labels"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    logps, mask = token_logprobs(logits, labels)
    preds = logits[0, :-1].argmax(-1)[mask[0]]
    targets = labels[0, 1:][mask[0]]
    return logps[0][mask[0]].double().numpy(), preds.numpy(), targets.numpy()


def test_values_match_unbatched_hand_computation(model, tokenizer, tmp_path):
    result = evaluate_tofu_stage(
        model, tokenizer, data_dir=FIXTURE_DIR, batch_size=3, max_new_tokens=5, output_dir=tmp_path, show_progress=False
    )
    forget = fixture_rows("forget05_perturbed")
    items = result["items"]
    for row, item in zip(forget, items["forget"]):
        logps, preds, targets = unbatched(model, tokenizer, row["question"], row["answer"])
        avg_nll = -logps.mean()
        assert item["avg_nll"] == pytest.approx(avg_nll, rel=1e-5)
        assert item["prob"] == pytest.approx(np.exp(-avg_nll), rel=1e-5)
        assert item["extraction_strength"] == pytest.approx(M.extraction_strength(preds[:-1], targets[:-1]))
        assert item["exact_memorization"] == pytest.approx(np.mean(preds[:-1] == targets[:-1]))
        assert item["mia_min_k"] == pytest.approx(M.min_k_score(logps[:-1], 0.4), rel=1e-5)
        para = -unbatched(model, tokenizer, row["question"], row["paraphrased_answer"])[0].mean()
        wrong = [-unbatched(model, tokenizer, row["question"], w)[0].mean() for w in row["perturbed_answer"]]
        assert item["truth_ratio"] == pytest.approx(np.exp(-np.mean(wrong)) / (np.exp(-para) + 1e-10), rel=1e-4)
    # Real authors: the correct answer is `answer`; normalised probability over the options.
    row, item = fixture_rows("real_authors_perturbed")[0], items["real_authors"][0]
    p_c = np.exp(unbatched(model, tokenizer, row["question"], row["answer"])[0].mean())
    p_w = [np.exp(unbatched(model, tokenizer, row["question"], w)[0].mean()) for w in row["perturbed_answer"]]
    assert item["normalized_prob"] == pytest.approx(p_c / (p_c + sum(p_w) + 1e-10), rel=1e-4)

    # Aggregates are the documented functions of the per-item values.
    trs = [v["truth_ratio"] for v in items["forget"]]
    assert result["forget_truth_ratio"] == pytest.approx(M.aggregate_truth_ratio(trs, "closer_to_1"))
    assert result["forget_Q_A_Prob"] == pytest.approx(np.mean([v["prob"] for v in items["forget"]]))
    components = [result[k] for k in UTILITY_COMPONENTS]
    assert result["model_utility"] == pytest.approx(M.harmonic_mean(components))
    scores_f = [v["mia_min_k"] for v in items["forget"]]
    scores_h = [v["mia_min_k"] for v in items["holdout"]]
    assert result["mia_min_k"] == pytest.approx(M.mia_auc(scores_f, scores_h))
    assert result["privleak"] == pytest.approx(M.privleak(result["mia_min_k"], 0.5))
    assert result["forget_quality"] is None and any("forget_quality" in n for n in result["notices"])

    # Greedy generation with left padding equals unpadded generation of the prompt alone.
    row = forget[0]
    example = format_qa(tokenizer, row["question"], row["answer"], **TOFU)
    prompt = torch.tensor([example["input_ids"][: example["labels"].count(IGNORE_INDEX)]])
    out = model.generate(
        prompt,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    expected = tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True).strip()
    assert items["forget"][0]["generation"] == expected
    assert items["forget"][0]["rougeL_recall"] == pytest.approx(
        M.rouge_recall(expected, row["answer"])["rougeL_recall"]
    )

    # Files: summary (no forget text) and per-item values, with provenance.
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["forget_Q_A_Prob"] == result["forget_Q_A_Prob"]
    assert summary["settings"]["forget_split"] == "forget05" and summary["fingerprint"] == result["fingerprint"]
    assert row["answer"] not in (tmp_path / "summary.json").read_text()
    per_item = json.loads((tmp_path / "items.json").read_text())["splits"]
    assert per_item["forget"][0]["truth_ratio"] == pytest.approx(items["forget"][0]["truth_ratio"])
    assert set(result["timing_s"]) >= {"forward_forget", "generate", "metrics", "total"}


def test_retain_results_give_forget_quality_and_privleak(model, tokenizer, tmp_path):
    retain = evaluate_tofu_stage(
        make_model(tokenizer, seed=1),
        tokenizer,
        data_dir=FIXTURE_DIR,
        compute_rouge=False,
        output_dir=tmp_path / "retain",
        show_progress=False,
    )
    result = evaluate_tofu(
        model,
        tokenizer,
        data_dir=FIXTURE_DIR,
        compute_rouge=False,
        retain_logs=tmp_path / "retain",
        show_progress=False,
    )
    trs = [v["truth_ratio"] for v in result["items"]["forget"]]
    retain_trs = [v["truth_ratio"] for v in retain["items"]["forget"]]
    assert result["forget_quality"] == pytest.approx(ks_2samp(trs, retain_trs).pvalue)
    assert result["privleak_reference_auc"] == retain["mia_min_k"]
    assert result["privleak"] == pytest.approx(M.privleak(result["mia_min_k"], retain["mia_min_k"]))
    assert result["model_utility"] is None

    # An open-unlearning TOFU_EVAL.json works as well.
    reference = {
        "forget_truth_ratio": {
            "agg_value": 0.6,
            "value_by_index": {str(i): {"score": v} for i, v in enumerate(retain_trs)},
        },
        "mia_min_k": {"agg_value": 0.4},
    }
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(reference))
    other = evaluate_tofu(
        model,
        tokenizer,
        data_dir=FIXTURE_DIR,
        compute_rouge=False,
        retain_logs=tmp_path / "TOFU_EVAL.json",
        show_progress=False,
    )
    assert other["forget_quality"] == pytest.approx(result["forget_quality"])
    assert other["privleak"] == pytest.approx(M.privleak(other["mia_min_k"], 0.4))
    with pytest.raises(ValueError, match="forget10"):
        evaluate_tofu(
            model,
            tokenizer,
            forget_split="forget10",
            data_dir=FIXTURE_DIR,
            retain_logs=tmp_path / "retain",
            show_progress=False,
        )


def test_reuse_only_with_matching_fingerprint(tokenizer, tmp_path, capsys):
    model = make_model(tokenizer, seed=2)
    kwargs = dict(data_dir=FIXTURE_DIR, compute_rouge=False, output_dir=tmp_path, max_items=2)
    first = evaluate_tofu_stage(model, tokenizer, **kwargs)
    again = evaluate_tofu_stage(model, tokenizer, **kwargs)
    assert again["reused"] and again["forget_Q_A_Prob"] == first["forget_Q_A_Prob"]
    assert "Reusing" in capsys.readouterr().out
    # Names and progress output do not change the numbers: still reused.
    renamed = evaluate_tofu_stage(model, tokenizer, model_name="other-name", show_progress=False, **kwargs)
    assert renamed["reused"] and renamed["fingerprint"] == first["fingerprint"]
    changed = evaluate_tofu_stage(model, tokenizer, **dict(kwargs, min_k=0.2))
    assert not changed["reused"] and "(settings differ)" in capsys.readouterr().out
    with torch.no_grad():
        model.lm_head.weight.add_(0.01)
    updated = evaluate_tofu_stage(model, tokenizer, **dict(kwargs, min_k=0.2))
    assert not updated["reused"] and "(model differ)" in capsys.readouterr().out
    assert evaluate_tofu_stage(model, tokenizer, reuse=False, **dict(kwargs, min_k=0.2))["reused"] is False
    # The stage folder is the runtime's (stamped); a summary edited afterwards is not trusted.
    summary = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "forget_Q_A_Prob": 0.5}))
    redone = evaluate_tofu_stage(model, tokenizer, **dict(kwargs, min_k=0.2))
    assert not redone["reused"] and redone["forget_Q_A_Prob"] == pytest.approx(updated["forget_Q_A_Prob"])
    assert "changed after it was made (summary.json" in capsys.readouterr().out


def test_the_stage_never_empties_a_folder_of_other_files(model, tokenizer, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other files \\(notes.txt\\)"):
        evaluate_tofu_stage(model, tokenizer, data_dir=FIXTURE_DIR, output_dir=tmp_path, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_suite_writes_nothing_and_imports_no_runtime_or_task(model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = evaluate_tofu(
        model, tokenizer, data_dir=FIXTURE_DIR, compute_rouge=False, max_items=2, show_progress=False
    )
    assert list(tmp_path.iterdir()) == [] and "fingerprint" not in result and "reused" not in result
    code = (
        "import sys, hf_unlearn.evaluation.tofu, hf_unlearn.callbacks as c; c.TofuEvalCallback; "
        "print(sorted(m for m in sys.modules if m.startswith(('hf_unlearn.tasks', 'hf_unlearn.runtime', "
        "'hf_unlearn.cli'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_options_reference_mask_and_es_floor(model, tokenizer):
    base = evaluate_tofu(model, tokenizer, data_dir=FIXTURE_DIR, compute_rouge=False, max_items=3, show_progress=False)
    clean = evaluate_tofu(
        model,
        tokenizer,
        data_dir=FIXTURE_DIR,
        compute_rouge=False,
        max_items=3,
        es_reference_floor=False,
        show_progress=False,
    )
    assert clean["extraction_strength"] <= base["extraction_strength"]
    assert base["num_items"] == {"forget": 3, "holdout": 3, "retain": 3, "real_authors": 3, "world_facts": 3}
    parity_tokenizer = make_tokenizer()
    parity_tokenizer.pad_token = parity_tokenizer.eos_token
    parity = evaluate_tofu(
        model,
        parity_tokenizer,
        data_dir=FIXTURE_DIR,
        compute_rouge=False,
        max_items=3,
        reference_attention_mask=True,
        show_progress=False,
    )
    assert parity["forget_Q_A_Prob"] != pytest.approx(base["forget_Q_A_Prob"], rel=1e-6)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            {"retain_perturbed": [{"question": "q", "answer": "a", "perturbed_answer": ["b"]}]},
            "lacks column.*paraphrased_answer",
        ),
        (
            {"world_facts_perturbed": [{"question": "q", "answer": "a", "perturbed_answer": "b"}]},
            "perturbed_answer must be a non-empty list",
        ),
        ({"holdout05": []}, "empty"),
        ({"real_authors_perturbed": None}, "'real_authors_perturbed' not found"),
    ],
)
def test_bad_data_fails_clearly_and_writes_nothing(model, tokenizer, tmp_path, overrides, match):
    data = write_fixture(tmp_path / "data", overrides)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        evaluate_tofu_stage(model, tokenizer, data_dir=data, output_dir=tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="Unknown forget split 'forget07'"):
        evaluate_tofu(model, make_tokenizer(), forget_split="forget07", data_dir=FIXTURE_DIR)
    with pytest.raises(ValueError, match="no pad token"):
        evaluate_tofu(model, make_tokenizer(pad=False), data_dir=FIXTURE_DIR)
    with pytest.raises(ValueError, match="Unknown MIA"):
        evaluate_tofu(model, make_tokenizer(), data_dir=FIXTURE_DIR, mia_attacks=["gradnorms"])


@pytest.mark.parametrize("architecture", ["llama-sdpa", "llama-eager", "gpt2"])
def test_packed_prompts_equal_one_sequence_per_answer(tokenizer, architecture):
    if architecture == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config).eval()
    else:
        model = make_model(tokenizer)
        model.config._attn_implementation = architecture.split("-")[1]
    kwargs = dict(data_dir=FIXTURE_DIR, compute_rouge=False, max_items=3, batch_size=5, show_progress=False)
    packed = evaluate_tofu(model, tokenizer, **kwargs)["items"]
    single = evaluate_tofu(
        model, tokenizer, share_prompts=False, batch_size=1, **{k: v for k, v in kwargs.items() if k != "batch_size"}
    )["items"]
    for split in packed:
        for a, b in zip(packed[split], single[split]):
            assert a["avg_nll"] == pytest.approx(b["avg_nll"], rel=1e-5)
            if "truth_ratio" in a:
                assert a["truth_ratio"] == pytest.approx(b["truth_ratio"], rel=1e-4)
            if "mia_min_k" in a:
                assert a["mia_min_k"] == pytest.approx(b["mia_min_k"], rel=1e-5)
                assert a["extraction_strength"] == b["extraction_strength"]


def test_min_k_from_the_vocabulary_layout_under_reference_conventions(tokenizer):
    """Under the reference label convention each forget/holdout answer is scored a second time in the last-dimension
    log-softmax layout, and Min-K reads that copy (the reference's Min-K rounds that way; its other metrics as
    cross-entropy); by default there is no copy. The copy shares the answer's tokens and prompt."""
    from hf_unlearn.evaluation.tofu import TofuEvalArguments, item_values, load_eval_rows, plan_evaluation
    from hf_unlearn.evaluation.tofu.plan import TokenScores

    rows = load_eval_rows("forget05", FIXTURE_DIR, lambda split: 2)
    rows = {split: rows[split] for split in ("forget", "holdout", "retain")}
    args = TofuEvalArguments.preset("reference", compute_rouge=False)
    plan = plan_evaluation(rows, tokenizer, args)
    for split in ("forget", "holdout"):
        for item in plan.items[split]:
            copy, answer = plan.sequences[item.min_k_answer], plan.sequences[item.answer]
            assert copy.vocab_layout and not answer.vocab_layout and item.min_k_answer != item.answer
            assert (copy.prompt, copy.answer_ids, copy.answer_mask) == (
                answer.prompt,
                answer.answer_ids,
                answer.answer_mask,
            )
    assert all(item.min_k_answer is None for item in plan.items["retain"])
    default = plan_evaluation(rows, tokenizer, TofuEvalArguments(compute_rouge=False))
    assert all(item.min_k_answer is None for items in default.items.values() for item in items)
    # Fake scores: the copy's log-probabilities are the answer's minus 1, so Min-K must read exactly 1 more.
    scored = []
    for sequence in plan.sequences:
        n = len(sequence.answer_ids)
        logps = -np.linspace(0.5, 3.0, n) - (1.0 if sequence.vocab_layout else 0.0)
        scored.append(TokenScores(logps, np.zeros(n, dtype=np.int64)))
    values = item_values(plan, scored, {}, tokenizer, args)
    for split in ("forget", "holdout"):
        for item, value in zip(plan.items[split], values[split]):
            body = scored[item.answer].logps[:-1]
            assert value["mia_min_k"] == pytest.approx(M.min_k_score(body, k=args.min_k) + 1.0)
            assert value["avg_nll"] == pytest.approx(-np.mean(scored[item.answer].logps))
