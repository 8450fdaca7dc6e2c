"""The `reference` preset: per-item values equal a plain fp64 recomputation that follows the TOFU reference evaluator's
tokenization (whole conversation tokenized, eos appended, labels from the end of the generation prompt; attention
mask `input_ids != pad`; one sequence at a time, no packing, no padding)."""

import zlib

import numpy as np
import pytest
import torch

from hf_unlearn.data.chat import encode_prompt, encode_prompt_answer, format_qa
from hf_unlearn.data.tofu import TofuFormat
from hf_unlearn.evaluation import metrics as M
from hf_unlearn.evaluation.tofu import TofuEvalArguments, evaluate_tofu

from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer

SYSTEM, DATE = TofuFormat().system_prompt, TofuFormat().date_string


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = make_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # the reference pads with eos: the mask then hides every <|im_end|>
    return tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(tokenizer, seed=3).double()


def reference_tokens(tokenizer, question, answer):
    """The reference's tokenization, written out: (input_ids, number of prompt tokens)."""
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    render = lambda messages, gen: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen, date_string=DATE
    )
    full = tokenizer(render(chat + [{"role": "assistant", "content": answer}], False), add_special_tokens=False)
    prompt = tokenizer(render(chat, True), add_special_tokens=False)
    ids = list(full["input_ids"])
    if ids[-1] != tokenizer.eos_token_id:
        ids.append(tokenizer.eos_token_id)
    return ids, len(prompt["input_ids"])


def reference_pass(model, tokenizer, question, answer):
    """fp64 log-probs and argmax of every label token, and the decoded label text."""
    ids, num_prompt = reference_tokens(tokenizer, question, answer)
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=input_ids.ne(tokenizer.pad_token_id).long()).logits[0]
    logps = torch.log_softmax(logits[:-1].double(), dim=-1)
    targets = input_ids[0, 1:]
    picked = logps.gather(1, targets[:, None])[:, 0]
    start = num_prompt - 1  # the logits at position t predict token t + 1
    text = tokenizer.decode(ids[num_prompt:], skip_special_tokens=True)
    return picked[start:].numpy(), logps[start:].argmax(-1).numpy(), targets[start:].numpy(), text


def avg_nll(model, tokenizer, question, answer):
    return float(-reference_pass(model, tokenizer, question, answer)[0].mean())


def test_chatml_reference_labels_add_newline_and_eos(tokenizer):
    example = format_qa(tokenizer, "Who?", "Hina.", system_prompt=SYSTEM, label_convention="reference")
    targets = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(targets) == "Hina.<|im_end|>\n<|im_end|>"
    ours = format_qa(tokenizer, "Who?", "Hina.", system_prompt=SYSTEM)
    assert tokenizer.decode([t for t, label in zip(ours["input_ids"], ours["labels"]) if label != -100]) == (
        "Hina.<|im_end|>"
    )
    # A template that ends the turn with eos (Llama 3 style): both conventions agree.
    eos_template = make_tokenizer(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    a = encode_prompt_answer(eos_template, "Who?", "Hina.", label_convention="reference")
    b = encode_prompt_answer(eos_template, "Who?", "Hina.")
    assert a == b and a[0] == encode_prompt(eos_template, "Who?")
    with pytest.raises(ValueError, match="label_convention='ours'"):
        encode_prompt_answer(tokenizer, "Who?", "Hina.", label_convention="ours")


def test_reference_preset_matches_plain_fp64_recomputation(model, tokenizer):
    args = TofuEvalArguments.preset("reference", batch_size=4, compute_rouge=False)
    assert (args.label_convention, args.reference_attention_mask, args.es_reference_floor) == ("reference", True, True)
    items = evaluate_tofu(model, tokenizer, args, data_dir=FIXTURE_DIR, show_progress=False)["items"]
    rel = dict(rel=1e-6, abs=0)
    for split, config in (("forget", "forget05_perturbed"), ("holdout", "holdout05")):
        for row, item in zip(fixture_rows(config), items[split]):
            logps, preds, targets, text = reference_pass(model, tokenizer, row["question"], row["answer"])
            nll = -logps.mean()
            assert item["avg_nll"] == pytest.approx(nll, **rel)
            assert item["prob"] == pytest.approx(np.exp(-nll), **rel)
            # ES, EM and min-k drop only the last label (the appended eos), as the reference does.
            n = len(targets) - 1
            k = next((k for k in range(n) if np.array_equal(preds[k:n], targets[k:n])), n - 1)
            assert item["extraction_strength"] == 1 - k / n
            assert item["exact_memorization"] == np.mean(preds[:n] == targets[:n])
            low = np.sort(logps[:n])[: max(1, int(n * 0.4))]
            assert item["mia_min_k"] == pytest.approx(-low.mean(), **rel)
            assert item["mia_loss"] == pytest.approx(nll, **rel)
            assert item["mia_zlib"] == pytest.approx(nll / len(zlib.compress(text.encode())), **rel)
    for split, config, correct in (
        ("forget", "forget05_perturbed", "paraphrased_answer"),
        ("retain", "retain_perturbed", "paraphrased_answer"),
        ("real_authors", "real_authors_perturbed", "answer"),
        ("world_facts", "world_facts_perturbed", "answer"),
    ):
        for row, item in zip(fixture_rows(config), items[split]):
            c = avg_nll(model, tokenizer, row["question"], row[correct])
            w = [avg_nll(model, tokenizer, row["question"], a) for a in row["perturbed_answer"]]
            assert item["truth_ratio"] == pytest.approx(np.exp(-np.mean(w)) / (np.exp(-c) + 1e-10), **rel)
            p_c, p_w = np.exp(-c), np.exp(-np.asarray(w))
            assert item["normalized_prob"] == pytest.approx(p_c / (p_c + p_w.sum() + 1e-10), **rel)
            assert item["wrong_prob"] == pytest.approx(np.mean(p_w), **rel)
    # The default convention gives other numbers on this ChatML model (it scores answer + <|im_end|> only).
    ours = evaluate_tofu(model, tokenizer, data_dir=FIXTURE_DIR, compute_rouge=False, show_progress=False)["items"]
    assert ours["forget"][0]["avg_nll"] != pytest.approx(items["forget"][0]["avg_nll"], rel=1e-3)
    assert M.qa_probability(items["forget"][0]["avg_nll"]) == pytest.approx(items["forget"][0]["prob"])


def test_cli_reference_labels_and_presets(tmp_path):
    from hf_unlearn.cli import main
    from hf_unlearn.cli.eval import EvalCommandArguments, _apply_presets

    command = EvalCommandArguments(model="m", output_dir="o", preset="reference")
    args = _apply_presets(command, TofuEvalArguments(es_reference_floor=False))
    assert args.label_convention == "reference" and args.reference_attention_mask
    assert args.es_reference_floor is False  # an option given explicitly wins over the preset
    only_labels = _apply_presets(EvalCommandArguments(model="m", output_dir="o", reference_labels=True), args)
    assert only_labels.label_convention == "reference"
    tf = _apply_presets(EvalCommandArguments(model="m", output_dir="o", preset="teacher_forced_only"), args)
    assert tf.compute_rouge is False
    with pytest.raises(ValueError, match="Unknown evaluation preset"):
        TofuEvalArguments.preset("fast")
    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--output-dir", str(tmp_path), "--preset", "fast"])
