"""Seed 003 (vLLM PR 40671): `FusedMoE.make_expert_params_mapping` moved to a module function."""

from __future__ import annotations

from reference.checkpoint import make_expert_params_mapping


def classmethod_entry(
    ckpt_gate_proj_name: str,
    ckpt_down_proj_name: str,
    ckpt_up_proj_name: str,
    num_experts: int,
    num_redundant_experts: int = 0,
) -> list:
    """The old entry point (`FusedMoE.make_expert_params_mapping`)."""
    return make_expert_params_mapping(
        ckpt_gate_proj_name, ckpt_down_proj_name, ckpt_up_proj_name, num_experts, num_redundant_experts
    )


def module_entry_without_default(
    ckpt_gate_proj_name: str,
    ckpt_down_proj_name: str,
    ckpt_up_proj_name: str,
    num_experts: int,
    num_redundant_experts: int,
) -> list:
    """A forwarder that dropped a default the old entry point had: old callers raise TypeError."""
    return classmethod_entry(
        ckpt_gate_proj_name, ckpt_down_proj_name, ckpt_up_proj_name, num_experts, num_redundant_experts
    )


def module_entry(
    ckpt_gate_proj_name: str,
    ckpt_down_proj_name: str,
    ckpt_up_proj_name: str,
    num_experts: int,
    num_redundant_experts: int = 0,
) -> list:
    """The merged forwarder: same signature and defaults as the old entry point."""
    return classmethod_entry(
        ckpt_gate_proj_name, ckpt_down_proj_name, ckpt_up_proj_name, num_experts, num_redundant_experts
    )
