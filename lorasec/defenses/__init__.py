"""Defenses: name -> a config and what the defense does, at one or both of two places in a cell (a registry,
one file per defense).

- `train_filter` runs between poisoning and training on the (poisoned) training set and says which rows to keep;
  training then sees only those. The removed row ids are stored, so precision and recall against the stored
  poisoned ids recompute.
- `input_filter` runs at evaluation on the trained model and says which inputs to reject; every clean and triggered
  test row's score and decision are stored, and the metrics are read with the rejected rows taken out.

A defense's config is a pydantic model tagged `kind: Literal[name]`; the classification config's `defense:` field is
the union of every registered one (`defense_union`), so an unknown name or a bad value is refused when the config
is validated, with the field named. Importing this package imports no torch (builders import it when called).

Adding one: a module here calling `DEFENSES.add(name, Defense(...))`, and one import line in this file.
"""

from __future__ import annotations

from lorasec.defenses import clustering, keyword, none, onion, spectral, strip  # noqa: F401  (register)
from lorasec.defenses.base import DEFENSES, Context, Defense, Kept, Rejected, defense_union

__all__ = ["DEFENSES", "Context", "Defense", "Kept", "Rejected", "defense_union"]
