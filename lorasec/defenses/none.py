"""No defense: every training row is kept and every input answered (the reference of every defense)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorasec.config import Frozen
from lorasec.defenses.base import DEFENSES, Defense


class NoDefense(Frozen):
    kind: Literal["none"] = Field("none", description="no defense (the reference every defense is compared with)")


DEFENSES.add("none", Defense(NoDefense))
