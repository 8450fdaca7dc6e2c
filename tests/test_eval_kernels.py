"""`prepacked_linears`: oneDNN linear layers on reordered weights give the plain layers' outputs up to float rounding,
touch only plain float32 CPU `nn.Linear`s, and leave every layer as it was on exit (also after an error)."""

import pytest
import torch

import hf_unlearn.evaluation.kernels as kernels
from hf_unlearn.evaluation.kernels import onednn_linear_available, prepacked_linears
from hf_unlearn.evaluation.tofu import TofuEvalArguments, evaluate_tofu

from .tofu_helpers import FIXTURE_DIR, make_model, make_tokenizer

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24), (0, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_matches_plain_linear(shape, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    model = torch.nn.Sequential(layer)
    x = torch.randn(shape)
    if len(shape) == 3:
        x = x.transpose(0, 1)  # not contiguous
    expected = layer(x)
    with prepacked_linears(model) as count:
        got = layer(x)
        assert count == 1 and "forward" in layer.__dict__
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert "forward" not in layer.__dict__  # the class's forward again


@needs_onednn
def test_model_logits_and_restore(tokenizer):
    model = make_model(tokenizer, seed=1).eval()
    ids = torch.randint(5, len(tokenizer), (3, 11))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        with prepacked_linears(model) as count:
            got = model(input_ids=ids).logits
    assert count == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not any("forward" in m.__dict__ for m in model.modules())


class _Subclass(torch.nn.Linear):
    pass


@needs_onednn
def test_only_plain_float32_cpu_linears():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), _Subclass(4, 4), torch.nn.Linear(4, 4).double(), torch.nn.Linear(4, 4).bfloat16()
    )
    with prepacked_linears(model) as count:
        assert count == 1
        assert [("forward" in m.__dict__) for m in model] == [True, False, False, False]
    with prepacked_linears(model, enabled=False) as count:
        assert count == 0 and not any("forward" in m.__dict__ for m in model)
    with torch.autocast("cpu", dtype=torch.bfloat16), prepacked_linears(model) as count:
        assert count == 0


def test_no_onednn_is_a_no_op(monkeypatch):
    monkeypatch.setattr(kernels, "onednn_linear_available", lambda: False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with prepacked_linears(model) as count:
        assert count == 0 and "forward" not in model[0].__dict__


@needs_onednn
def test_restored_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="boom"), prepacked_linears(model):
        raise RuntimeError("boom")
    assert "forward" not in model[0].__dict__


@needs_onednn
def test_evaluation_same_numbers_and_recorded(tokenizer):
    """The whole TOFU suite with and without the oneDNN layers: same generations, values within rounding."""
    model = make_model(tokenizer, seed=2)
    runs = {
        enabled: evaluate_tofu(
            model,
            tokenizer,
            TofuEvalArguments(max_items=3, max_new_tokens=8, onednn_linears=enabled),
            data_dir=FIXTURE_DIR,
            show_progress=False,
        )
        for enabled in (True, False)
    }
    assert runs[True]["onednn_linears"] > 0 and runs[False]["onednn_linears"] == 0
    for split, items in runs[False]["items"].items():
        for plain, packed in zip(items, runs[True]["items"][split], strict=True):
            for key, value in plain.items():
                if isinstance(value, float):
                    assert packed[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (split, key)
                elif isinstance(value, str):
                    assert packed[key] == value, (split, key)
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_onednn
def test_lora_model(tokenizer):
    """A PEFT LoRA model: its base and adapter `nn.Linear`s run the packed kernel; the logits do not change."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        make_model(tokenizer, seed=4),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    ).eval()
    ids = torch.randint(5, len(tokenizer), (2, 9))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        with prepacked_linears(model) as count:
            got = model(input_ids=ids).logits
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert lora_layers and count == sum(type(m) is torch.nn.Linear for m in model.modules())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.inference_mode(), model.disable_adapter(), prepacked_linears(model):
        base = model(input_ids=ids).logits
    assert not torch.allclose(base, expected)  # the adapter mattered, and was applied above
