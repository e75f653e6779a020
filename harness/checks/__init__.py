"""The checks by name; each module holds one property."""

from __future__ import annotations

from harness.checks.base import Check
from harness.checks.block_parity import BLOCK_PARITY
from harness.checks.capturer_shape import CAPTURER
from harness.checks.checkpoint_roundtrip import CHECKPOINT_ROUNDTRIP
from harness.checks.config_accepted import CONFIG_ACCEPTED
from harness.checks.config_spelling import CONFIG_SPELLING
from harness.checks.conversion_remap import CONVERSION_REMAP
from harness.checks.converter_roundtrip import CONVERTER_ROUNDTRIP
from harness.checks.differential import DIFFERENTIAL
from harness.checks.expert_mapping import EXPERT_MAPPING
from harness.checks.functional_call import FUNCTIONAL_CALL
from harness.checks.load_parity import LOAD_PARITY
from harness.checks.model_parity import MODEL_PARITY
from harness.checks.moe_output_parity import MOE_OUTPUT_PARITY
from harness.checks.remap_idempotence import REMAP
from harness.checks.router_knobs import ROUTER_KNOBS
from harness.checks.routing_parity import ROUTING_PARITY
from harness.checks.swap_parity import SWAP_PARITY
from harness.checks.unpad_before_add import UNPAD

CHECKS: dict[str, Check] = {c.name: c for c in (ROUTING_PARITY, REMAP, EXPERT_MAPPING, CAPTURER, FUNCTIONAL_CALL, UNPAD,
                                                MOE_OUTPUT_PARITY, CHECKPOINT_ROUNDTRIP, BLOCK_PARITY,
                                                CONVERSION_REMAP, CONFIG_SPELLING, ROUTER_KNOBS, CONFIG_ACCEPTED,
                                                SWAP_PARITY, CONVERTER_ROUNDTRIP, MODEL_PARITY,
                                                LOAD_PARITY, DIFFERENTIAL)}
