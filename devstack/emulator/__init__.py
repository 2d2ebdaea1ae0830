"""The Llama Guard emulator: a development stand-in for the model endpoint, never a safety model.

A small aiohttp server for the local demo stack and the test-suite. It speaks the SageMaker
runtime route, TGI's ``/generate`` and vLLM's OpenAI-compatible ``/v1/completions`` (the SageMaker
route takes that body too, as an LMI endpoint does), reads a Llama Guard prompt in any supported
format, applies blunt keyword rules to the assessed message (``rules``), answers in TGI's or
vLLM's shape (``completion``, ``tgi``, ``vllm``), and injects latency, a concurrency capacity and
faults (``config``) with the errors each service really sends (``wire``). ``server`` wires it
together::

    async with run_emulator(EmulatorConfig(latency_ms=20)) as emu:
        emu.faults.fail_next.append("throttle")   # exactly one ThrottlingException, then answers
        ...  # point the SageMaker client's endpoint_url (or the TGI URL) at emu.url
        assert emu.stats.by_outcome["throttled"] == 1
"""

from devstack.emulator.config import (
    FAULT_KINDS,
    EmulatorConfig,
    EmulatorStats,
    FaultKind,
    FaultPlan,
)
from devstack.emulator.rules import INVALID_MARKER
from devstack.emulator.server import EMULATOR_KEY, RunningEmulator, build_app, run_emulator

__all__ = [
    "EMULATOR_KEY",
    "FAULT_KINDS",
    "INVALID_MARKER",
    "EmulatorConfig",
    "EmulatorStats",
    "FaultKind",
    "FaultPlan",
    "RunningEmulator",
    "build_app",
    "run_emulator",
]
