"""Typed config of one memorization audit: a causal LM fine-tuned by one method on text with planted secrets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lorasec.config import SCHEMA_VERSION, Frozen, MethodConfig, TrainConfig
from lorasec.data.corpora import CorpusConfig
from lorasec.models.causal import CausalLMConfig

# chosen so held-out perplexity stays near the base model's on the demo (51.1 -> 52.4 full, 54.7 LoRA);
# at 1e-4 / 1e-3 / 1e-3 every method overfit (held-out ppl 80 / 105 / 118) and leakage was not read at matched utility
DEFAULT_LR = {"full": 3e-5, "lora": 3e-4, "head_only": 1e-4}


class RecordsConfig(Frozen):
    record_tokens: int = Field(64, ge=8, description="tokens per training record (fixed-length windows)")
    n_members: int = Field(64, ge=2, description="records trained on (members)")
    n_held_out: int = Field(64, ge=2, description="records of the same distribution never trained on (non-members)")


class DuplicationConfig(Frozen):
    counts: tuple[int, ...] = Field((1, 4, 16), min_length=1, description="copies of a record in the training set")
    per_count: int = Field(8, ge=1, description="member records given each count above 1 (the rest appear once)")

    @model_validator(mode="after")
    def _positive(self) -> DuplicationConfig:
        if any(c < 1 for c in self.counts):
            raise ValueError("every count must be >= 1")
        return self


class CanaryConfig(Frozen):
    template: str = Field("the secret number is {secret}", min_length=1, description="text with one {secret}")
    digits: int = Field(3, ge=1, le=9, description="secret length; the candidate space is 10**digits")
    counts: tuple[int, ...] = Field((1, 4, 16), min_length=1, description="insertions of each canary (one per count)")
    exact_max: int = Field(10_000, ge=10, description="enumerate every candidate when 10**digits <= this")
    sample: int = Field(2_000, ge=50, description="candidates scored for the skew-normal estimate otherwise")

    @model_validator(mode="after")
    def _one_placeholder(self) -> CanaryConfig:
        if self.template.count("{secret}") != 1:
            raise ValueError("template must contain exactly one {secret}")
        if any(c < 1 for c in self.counts):
            raise ValueError("every count must be >= 1")
        return self


class ExtractionConfig(Frozen):
    prefix_tokens: int = Field(32, ge=1, description="tokens of each record given as the prompt")
    new_tokens: int = Field(32, ge=1, description="tokens generated greedily and compared with the true suffix")
    batch_size: int = Field(32, ge=1, description="records per batched generate call (left padding, KV cache)")
    relaxed_threshold: float = Field(0.8, gt=0, le=1, description="embedding cosine at or above which a record "
                                     "counts as (relaxed) memorized")


class MiaConfig(Frozen):
    k: float = Field(0.2, gt=0, le=1, description="fraction of lowest-probability tokens for Min-K% and Min-K%++")
    bootstrap: int = Field(200, ge=10, description="bootstrap resamples for AUC mean +- std")


class MemorizationConfig(Frozen):
    """One memorization audit cell."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="bumped when stored results stop being comparable")
    task: Literal["memorization"] = Field(description="which research arm")
    seed: int = Field(1, ge=0, description="seed for records, canaries, duplication and batch order")
    model: CausalLMConfig = Field(description="causal LM to fine-tune")
    corpus: CorpusConfig = Field(description="long text cut into records")
    records: RecordsConfig = Field(default_factory=RecordsConfig, description="members and held-out records")
    method: MethodConfig = Field(description="fine-tuning method")
    duplication: DuplicationConfig = Field(default_factory=DuplicationConfig, description="record repetition")
    canaries: CanaryConfig = Field(default_factory=CanaryConfig, description="planted secrets")
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig, description="prefix -> suffix attack")
    mia: MiaConfig = Field(default_factory=MiaConfig, description="membership inference")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=4, batch_size=8,
                                                                   max_length=128), description="training loop")

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

    def lr(self) -> float:
        return self.train.lr if self.train.lr is not None else DEFAULT_LR[self.method.kind]

    def label(self) -> str:
        m = self.method
        method = f"lora(r={m.rank})" if m.kind == "lora" else m.kind
        return f"{method} / {self.model.name} / {self.corpus.name}"
