"""The one detector of "prompt too long" (``says_prompt_too_long``) and its wordings."""

from __future__ import annotations

import pytest
from support.timing import best_ratio

from worker.core.errors import says_prompt_too_long

TGI_TOTAL = (
    "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
    "Given: 4500 `inputs` tokens and 100 `max_new_tokens`"
)
TGI_INPUTS = "Input validation error: `inputs` must have less than 4000 tokens. Given: 4500"
VLLM_REQUESTED = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4900 in the messages, 100 in the completion). Please reduce the length of the messages "
    "or completion."
)
VLLM_INPUT = (
    "This model's maximum context length is 2048 tokens. However, your request has 2100 input "
    "tokens. Please reduce the length of the input messages."
)
# Newer vLLM (vllm/renderers/params.py), after tokenising and before (a character pre-check).
VLLM_PASSED_TOKENS = (
    "You passed 4100 input tokens and requested 32 output tokens. However, the model's context "
    "length is only 4096 tokens, resulting in a maximum input length of 4064 tokens. Please "
    "reduce the length of the input prompt."
)
VLLM_PASSED_CHARACTERS = (
    "You passed 30000 input characters and requested 32 output tokens. However, the model's "
    "context length is only 4096 tokens, resulting in a maximum input length of 4064 tokens "
    "(at most 24384 characters). Please reduce the length of the input prompt."
)
TOO_LONG_WORDINGS = {
    "tgi-total": TGI_TOTAL,
    "tgi-inputs": TGI_INPUTS,
    "vllm-requested": VLLM_REQUESTED,
    "vllm-input": VLLM_INPUT,
    "vllm-passed-tokens": VLLM_PASSED_TOKENS,
    "vllm-passed-characters": VLLM_PASSED_CHARACTERS,
}
OTHER_REJECTIONS = {
    "tgi-temperature": "Input validation error: `temperature` must be strictly positive",
    "tgi-top-n": "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 50",
    "tgi-max-new-tokens": "Input validation error: `max_new_tokens` must be <= 1024. Given: 2048",
    "sagemaker-not-found": "Endpoint llama-guard of account 123456789012 not found.",
    "vllm-unknown-model": "The model `llama-guard` does not exist.",
    "vllm-logprobs": "Requested sample logprobs of 25, which is greater than max allowed: 20",
    "empty": "",
}


@pytest.mark.parametrize("message", TOO_LONG_WORDINGS.values(), ids=TOO_LONG_WORDINGS.keys())
def test_each_too_long_wording_is_recognised(message: str) -> None:
    assert says_prompt_too_long(message)


@pytest.mark.parametrize("message", OTHER_REJECTIONS.values(), ids=OTHER_REJECTIONS.keys())
def test_other_rejections_are_not_too_long(message: str) -> None:
    assert not says_prompt_too_long(message)


@pytest.mark.parametrize("message", TOO_LONG_WORDINGS.values(), ids=TOO_LONG_WORDINGS.keys())
def test_a_wording_wrapped_in_other_text_is_recognised(message: str) -> None:
    """SageMaker and proxies wrap the container's text in their own; the wording still counts."""
    wrapped = f'Received client error (422) from primary with message "{{"error":"{message}"}}".'
    assert says_prompt_too_long(wrapped)


@pytest.mark.parametrize(
    "unit",
    [
        "`inputs` tokens + ",
        "`inputs` must have less than 9",
        "maximum context length is 9",
        "the model's context length is only 9",
        " ",
    ],
)
def test_detection_is_linear_in_the_message(unit: str) -> None:
    """Four times the text takes about four times the work, not sixteen (a ratio, no limit)."""
    small, large = unit * 10_000, unit * 40_000
    ratio = best_ratio(lambda: says_prompt_too_long(small), lambda: says_prompt_too_long(large))
    assert ratio < 10, f"4x the text took {ratio:.1f}x the time: not linear"
