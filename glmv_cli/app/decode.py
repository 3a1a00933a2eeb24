"""The think budget: once the model has written `budget` tokens after `<think>` without closing
it, `</think><answer>` is fed into the sequence as if the model had written them, and generation
goes on from there (the model then answers), as the official benchmark script does. Plugged into
`glmv_cli.generate.Generation` through its `forced` hook; forced ids count toward max_new_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThinkBudget:
    """Close the thinking after `budget` tokens: think_id opens it, close_id closes it, `forced`
    (e.g. the ids of "</think><answer>") is inserted when the budget runs out."""

    budget: int
    think_id: int
    close_id: int
    forced: tuple[int, ...]


class BudgetState:
    """Counts thinking tokens; `after(token)` is Generation's `forced` hook."""

    def __init__(self, rule: ThinkBudget | None):
        self.rule, self.count, self.thinking, self.spent = rule, 0, False, False

    def after(self, token: int) -> tuple[int, ...]:
        """Ids to force after the model wrote `token` (usually none)."""
        rule = self.rule
        if rule is None or self.spent:
            return ()
        if token == rule.think_id:
            self.thinking, self.count = True, 0
        elif token == rule.close_id:
            self.spent = True  # the model closed its thinking itself
            return ()
        elif self.thinking:
            self.count += 1
        if self.thinking and self.count >= rule.budget:
            self.spent = True
            return rule.forced
        return ()
