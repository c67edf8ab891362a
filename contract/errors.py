"""The contract's own error: a message or value crossing the Blender <-> worker boundary is
malformed (which field, what was expected, what was found)."""

from __future__ import annotations


class ContractError(Exception):
    """A value of the contract (rig state, job, protocol line, vocabulary) is invalid."""
