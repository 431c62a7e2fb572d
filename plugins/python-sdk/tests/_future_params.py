"""A params dataclass under postponed annotations (string annotations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class P:
    a: Optional[int] = None
    b: list[str] = field(default_factory=list)
