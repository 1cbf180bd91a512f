"""Memorization and leakage (paper 2, arXiv 2506.20856): a causal LM fine-tuned by one method on records of
long text, some duplicated, with planted secrets (canaries); then extraction, exposure, membership inference
and utility, read side by side."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lorasec.config import (
    CanaryConfig,
    CausalLMConfig,
    CorpusConfig,
    DuplicationConfig,
    Frozen,
    MethodConfig,
    TaskConfig,
    TrainConfig,
    method_label,
    train_with_defaults,
)
from lorasec.tasks.base import TASKS, Task
from lorasec.tasks.memorization.record import MemorizationRecord
from lorasec.tasks.memorization.table import memorization_table

# chosen so held-out perplexity stays near the base model's on the demo (51.1 -> 52.4 full, 54.7 LoRA);
# at 1e-4 / 1e-3 / 1e-3 every method overfit (held-out ppl 80 / 105 / 118) and leakage was not read at matched utility
DEFAULT_LR = {"full": 3e-5, "lora": 3e-4, "head_only": 1e-4}


class RecordsConfig(Frozen):
    record_tokens: int = Field(64, ge=8, description="tokens per training record (fixed-length windows)")
    n_members: int = Field(64, ge=2, description="records trained on (members)")
    n_held_out: int = Field(64, ge=2, description="records of the same distribution never trained on (non-members)")


class ExtractionConfig(Frozen):
    prefix_tokens: int = Field(32, ge=1, description="tokens of each record given as the prompt")
    new_tokens: int = Field(32, ge=1, description="tokens generated greedily and compared with the true suffix")
    batch_size: int = Field(32, ge=1, description="records per batched generate call (left padding, KV cache)")
    relaxed_threshold: float = Field(0.8, gt=0, le=1, description="embedding cosine at or above which a record "
                                     "counts as (relaxed) memorized")


class MiaConfig(Frozen):
    k: float = Field(0.2, gt=0, le=1, description="fraction of lowest-probability tokens for Min-K% and Min-K%++")
    bootstrap: int = Field(200, ge=10, description="bootstrap resamples for AUC mean +- std")


class AuditConfig(Frozen):
    """The one-run privacy audit (Steinke, Nasr and Jagielski, 2023; lorasec.metrics.audit): m random-token
    canaries, each trained on with probability 1/2 by a stored coin flip, scored after training by a membership
    score; the top-k are guessed "in", the bottom-k "out", and the correct guesses give a lower bound on epsilon."""

    canaries: int = Field(256, ge=2, le=100_000, description="m audit canaries (random token sequences)")
    tokens: int = Field(16, ge=2, le=512, description="token ids per audit canary, drawn uniformly from the "
                        "tokenizer's ordinary (non-special) ids")
    guesses: int = Field(32, ge=1, description="k: 'in' for the k highest scores, 'out' for the k lowest")
    score: Literal["loss", "reference", "zlib", "min_k", "min_k_plus_plus"] = Field(
        "reference", description="the membership score that ranks the canaries (see `mia`)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence of the lower bound")

    @model_validator(mode="after")
    def _guesses_fit(self) -> AuditConfig:
        if 2 * self.guesses > self.canaries:
            raise ValueError(f"audit.guesses: 2 x {self.guesses} guesses need at least that many canaries "
                             f"(audit.canaries is {self.canaries})")
        return self


# a memorization cell trains for epochs over a small record set; fields a `train:` block leaves out come from here
TRAIN_DEFAULTS = {"epochs": 4, "batch_size": 8, "max_length": 128}


class MemorizationConfig(TaskConfig):
    """One memorization audit cell."""

    task: Literal["memorization"] = Field(description="which research arm")
    model: CausalLMConfig = Field(description="causal LM to fine-tune")
    corpus: CorpusConfig = Field(description="long text cut into records")
    records: RecordsConfig = Field(default_factory=RecordsConfig, description="members and held-out records")
    method: MethodConfig = Field(description="fine-tuning method")
    duplication: DuplicationConfig = Field(default_factory=DuplicationConfig, description="record repetition")
    canaries: CanaryConfig = Field(default_factory=CanaryConfig, description="planted secrets")
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig, description="prefix -> suffix attack")
    mia: MiaConfig = Field(default_factory=MiaConfig, description="membership inference")
    # key: if_set: cells stored before the audit existed keep their keys
    audit: AuditConfig | None = Field(None, json_schema_extra={"key": "if_set"},
                                      description="one-run epsilon audit with random canaries; null: none")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS),
                               description=f"training loop; unset fields default to {TRAIN_DEFAULTS}")

    @field_validator("train", mode="before")
    @classmethod
    def _train_defaults(cls, raw: object) -> object:
        return train_with_defaults(raw, TRAIN_DEFAULTS)

    @model_validator(mode="after")
    def _fits(self) -> MemorizationConfig:
        e = self.extraction
        if e.prefix_tokens + e.new_tokens > self.records.record_tokens:
            raise ValueError(f"extraction.prefix_tokens + new_tokens must be <= records.record_tokens "
                             f"({self.records.record_tokens})")
        dup = sum(1 for c in self.duplication.counts if c > 1) * self.duplication.per_count
        if dup > self.records.n_members:
            raise ValueError(f"duplication needs {dup} members but records.n_members is {self.records.n_members}")
        return self

    def defaults(self) -> dict[str, object]:
        return {"train.lr": DEFAULT_LR[self.method.kind]}

    def label(self) -> str:
        return f"{method_label(self.method)} / {self.model.name} / {self.corpus.name}"


def check(cfg: MemorizationConfig) -> str:
    """Everything `run` would refuse, without training or loading weights: the model directory (safetensors headers
    and shapes, tokenizer), the config against the real model (max_length vs positions, LoRA targets and rank vs its
    layers), the corpus (enough windows for members + held-out records) and the training sequences (records and
    canaries) against train.max_length."""
    import numpy as np

    from lorasec.attacks.canaries import canary_ids, make_canaries
    from lorasec.data.corpora import load_corpus
    from lorasec.errors import InputError
    from lorasec.models.causal import shared_tokenizer
    from lorasec.models.skeleton import causal_skeleton
    from lorasec.models.weights import check_safetensors_dir
    from lorasec.seeds import stage_seeds
    from lorasec.tasks.checks import check_fits

    if cfg.model.name == "local":
        check_safetensors_dir(cfg.model.path)
    sk = causal_skeleton(cfg.model)
    r = cfg.records
    if sk is not None:
        check_fits(sk, cfg.method, {"train.max_length": cfg.train.max_length, "records.record_tokens": r.record_tokens})
    tok = sk.tokenizer if sk is not None else shared_tokenizer() if cfg.model.name == "smollm2-135m" else None
    corpus = load_corpus(cfg.corpus)
    if tok is None:  # a hub model not downloaded yet: its tokenizer is unknown here
        return f"{cfg.label()} ({len(corpus.documents)} documents)"
    windows = 0
    docs = corpus.documents
    for lo in range(0, len(docs), 256):  # counted as chunk_records cuts them: tails shorter than a record dropped
        enc = tok([d.text for d in docs[lo : lo + 256]], add_special_tokens=False, split_special_tokens=True,
                  verbose=False)
        windows += sum(len(ids) // r.record_tokens for ids in enc["input_ids"])
    if windows < r.n_members + r.n_held_out:
        raise InputError(f"records.n_members: the corpus gives {windows} records of {r.record_tokens} tokens but "
                         f"records.n_members + records.n_held_out = {r.n_members + r.n_held_out}")
    if r.record_tokens > cfg.train.max_length:
        raise InputError(f"train.max_length: {cfg.train.max_length} is less than records.record_tokens "
                         f"({r.record_tokens}); records would be cut")
    seeds = stage_seeds(cfg.seed, TASK.stages)
    longest = max(len(canary_ids(tok, c.text)) for c in make_canaries(cfg.canaries,
                                                                      np.random.default_rng(seeds["canaries"])))
    if longest > cfg.train.max_length:
        raise InputError(f"train.max_length: {cfg.train.max_length} is less than a canary's {longest} tokens; "
                         "canaries would be cut")
    return f"{cfg.label()} ({len(docs)} documents, {windows} records of {r.record_tokens} tokens)"


TASK = TASKS.add("memorization", Task(
    name="memorization",
    config=MemorizationConfig,
    pipeline="lorasec.tasks.memorization.pipeline:run",
    # append only: a stage's seed depends on its position
    stages=("records", "canaries", "duplication", "train", "bootstrap", "adapt", "canary_sample", "audit"),
    table=memorization_table,
    check=check,
    listing={"models": "model", "datasets": "corpus", "methods": "method"},
    report="lorasec.tasks.memorization.report:sections",
    record=MemorizationRecord,
))
