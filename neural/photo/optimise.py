"""The optimisation loop both inversions share: Adam on a few tensors, a step budget, a
progress callback after every step and a cancel check before every step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import PhotoError

Progress = Callable[[int, int, float], None]
"""(step done, step budget, loss after the step's update was computed) after every step."""
Cancel = Callable[[], bool]
"""True to stop: checked before every step."""


class InversionCancelled(PhotoError):
    """The caller's cancel check fired; nothing was returned or written."""


def check_budget(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 100_000:
        raise PhotoError(f"steps: expected an integer step budget 0..100000, found {steps!r}")


def adam_minimise(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> list[float]:
    """Minimise ``loss_fn()`` (a scalar tensor) over ``params`` (leaf tensors with
    requires_grad) with Adam for ``steps`` steps; returns the loss of every step (before its
    update). Raises InversionCancelled when ``cancel()`` is true, PhotoError on a NaN loss."""
    check_budget(steps)
    optimiser = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for step in range(steps):
        if cancel is not None and cancel():
            raise InversionCancelled(f"inversion cancelled after {step} of {steps} steps")
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn()
        value = float(loss.detach())
        if value != value or value in (float("inf"), float("-inf")):
            raise PhotoError(f"inversion: the loss became {value} at step {step}; lower the "
                             "learning rate")
        loss.backward()
        optimiser.step()
        losses.append(value)
        if progress is not None:
            progress(step + 1, steps, value)
    return losses
