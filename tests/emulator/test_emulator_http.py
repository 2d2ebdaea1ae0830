"""The emulator over real HTTP: both inference routes, TGI's request checks, the token budget."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from emulator_prompts import FORMATS, prompt_for, vector_prompt, vectors

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.emulator.tgi import estimate_tokens

PARAMETERS = {"max_new_tokens": 32, "return_full_text": False, "details": True, "top_n_tokens": 5}
BUDGET_MESSAGE = (
    "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
    "Given: 5000 `inputs` tokens and 32 `max_new_tokens`"
)


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with run_emulator(EmulatorConfig()) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def _invoke(
    http: ClientSession, emu: RunningEmulator, body: dict[str, Any], endpoint: str = "guard"
) -> tuple[int, Any]:
    url = f"{emu.url}/endpoints/{endpoint}/invocations"
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def _generate(
    http: ClientSession, emu: RunningEmulator, body: dict[str, Any]
) -> tuple[int, Any]:
    async with http.post(f"{emu.url}/generate", json=body) as response:
        return response.status, await response.json()


async def test_invocations_answers_a_json_list(emu: RunningEmulator, http: ClientSession) -> None:
    body = {"inputs": prompt_for("hello", "llama-guard-1"), "parameters": PARAMETERS}
    async with http.post(f"{emu.url}/endpoints/guard/invocations", json=body) as response:
        document = await response.json()
        content_type = response.content_type

    assert content_type == "application/json"
    assert isinstance(document, list)
    assert len(document) == 1
    assert document[0]["generated_text"] == "safe"


async def test_generate_answers_a_json_object(emu: RunningEmulator, http: ClientSession) -> None:
    status, document = await _generate(
        http, emu, {"inputs": prompt_for("rob a bank", "llama-guard-3"), "parameters": PARAMETERS}
    )

    assert status == 200
    assert isinstance(document, dict)
    assert document["generated_text"] == "\n\nunsafe\nS2"


@pytest.mark.parametrize("vector", vectors(), ids=lambda vector: str(vector["id"]))
async def test_vector_prompt_gets_an_answer_in_its_models_style(
    vector: dict[str, object], emu: RunningEmulator, http: ClientSession
) -> None:
    _, document = await _invoke(http, emu, {"inputs": vector_prompt(vector), "parameters": {}})
    text = document[0]["generated_text"]
    llama3 = str(vector["format"]).startswith("llama-guard-3")

    assert text.startswith("\n\n") == llama3
    assert text.strip().split("\n")[0] in ("safe", "unsafe")


async def test_details_are_left_out_unless_asked(emu: RunningEmulator, http: ClientSession) -> None:
    _, document = await _invoke(http, emu, {"inputs": prompt_for("hello"), "parameters": {}})

    assert "details" not in document[0]


async def test_details_have_tgis_fields(emu: RunningEmulator, http: ClientSession) -> None:
    _, document = await _invoke(
        http, emu, {"inputs": prompt_for("hello"), "parameters": PARAMETERS}
    )
    details = document[0]["details"]

    assert details["finish_reason"] == "eos_token"
    assert details["generated_tokens"] == len(details["tokens"])
    assert details["seed"] is None
    assert details["prefill"] == []
    assert set(details["tokens"][0]) == {"id", "text", "logprob", "special"}


async def test_top_tokens_are_left_out_without_top_n_tokens(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("hello"), "parameters": {"details": True}}

    _, document = await _invoke(http, emu, body)

    assert "top_tokens" not in document[0]["details"]


async def test_top_tokens_list_n_candidates_for_every_token(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("hello"), "parameters": {**PARAMETERS, "top_n_tokens": 3}}

    _, document = await _invoke(http, emu, body)
    details = document[0]["details"]

    assert len(details["top_tokens"]) == len(details["tokens"])
    assert all(len(position) == 3 for position in details["top_tokens"])


@pytest.mark.parametrize("prompt_format", FORMATS)
@pytest.mark.parametrize("message", ["hello there", "I will rob a bank"])
async def test_verdict_token_logprob_equals_the_top_candidates(
    prompt_format: str, message: str, emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for(message, prompt_format), "parameters": PARAMETERS}

    _, document = await _invoke(http, emu, body)
    details = document[0]["details"]
    index = next(i for i, t in enumerate(details["tokens"]) if t["text"].strip())
    verdict, candidates = details["tokens"][index], details["top_tokens"][index]

    assert verdict["text"] in ("safe", "unsafe")
    assert candidates[0] == verdict
    assert {candidate["text"] for candidate in candidates[:2]} == {"safe", "unsafe"}


async def test_top_tokens_give_a_score_consistent_with_the_verdict(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("cook meth", "llama-guard-1"), "parameters": PARAMETERS}

    _, document = await _invoke(http, emu, body)
    candidates = {c["text"]: c["logprob"] for c in document[0]["details"]["top_tokens"][0]}
    unsafe, safe = math.exp(candidates["unsafe"]), math.exp(candidates["safe"])

    assert unsafe / (unsafe + safe) > 0.9


async def test_llama_guard_3_details_start_with_a_blank_line_token(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("hello", "llama-guard-3-1b"), "parameters": PARAMETERS}

    _, document = await _invoke(http, emu, body)

    assert document[0]["details"]["tokens"][0]["text"] == "\n\n"


async def test_max_new_tokens_cuts_the_completion(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("hello"), "parameters": {**PARAMETERS, "max_new_tokens": 1}}

    _, document = await _invoke(http, emu, body)

    assert document[0]["generated_text"] == "\n\n"
    assert document[0]["details"]["finish_reason"] == "length"


async def test_return_full_text_echoes_the_prompt(
    emu: RunningEmulator, http: ClientSession
) -> None:
    prompt = prompt_for("hello", "llama-guard-2")

    _, document = await _generate(
        http, emu, {"inputs": prompt, "parameters": {"return_full_text": True}}
    )

    assert document["generated_text"] == prompt + "safe"


async def test_prompt_is_not_echoed_by_default(emu: RunningEmulator, http: ClientSession) -> None:
    _, document = await _generate(http, emu, {"inputs": prompt_for("hello", "llama-guard-2")})

    assert document["generated_text"] == "safe"


async def test_echo_by_default_applies_when_return_full_text_is_absent(http: ClientSession) -> None:
    prompt = prompt_for("hello", "llama-guard-1")
    async with run_emulator(EmulatorConfig(echo_prompt_by_default=True)) as emu:
        _, echoed = await _invoke(http, emu, {"inputs": prompt})
        _, plain = await _invoke(
            http, emu, {"inputs": prompt, "parameters": {"return_full_text": False}}
        )

    assert echoed[0]["generated_text"] == prompt + "safe"
    assert plain[0]["generated_text"] == "safe"


VALIDATION_CASES = [
    ({"inputs": ""}, "Input validation error: `inputs` cannot be empty"),
    (
        {"inputs": "x", "parameters": {"max_new_tokens": 0}},
        "Input validation error: `max_new_tokens` must be strictly positive",
    ),
    (
        {"inputs": "x", "parameters": {"temperature": 0}},
        "Input validation error: `temperature` must be strictly positive",
    ),
    (
        {"inputs": "x", "parameters": {"top_p": 1.0}},
        "Input validation error: `top_p` must be > 0.0 and < 1.0",
    ),
    (
        {"inputs": "x", "parameters": {"top_k": 0}},
        "Input validation error: `top_k` must be strictly positive",
    ),
    (
        {"inputs": "x", "parameters": {"top_n_tokens": 6}},
        "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6",
    ),
]


@pytest.mark.parametrize(("body", "error"), VALIDATION_CASES)
async def test_generate_rejects_what_tgi_rejects_with_422(
    body: dict[str, Any], error: str, emu: RunningEmulator, http: ClientSession
) -> None:
    status, document = await _generate(http, emu, body)

    assert status == 422
    assert document == {"error": error, "error_type": "validation"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"inputs": 42},
        {"inputs": "x", "parameters": []},
        {"inputs": "x", "parameters": {"max_new_tokens": -1}},
    ],
    ids=["no-inputs", "inputs-not-string", "parameters-not-object", "negative-max-new-tokens"],
)
async def test_generate_rejects_a_body_of_the_wrong_shape_with_422(
    body: dict[str, Any], emu: RunningEmulator, http: ClientSession
) -> None:
    status, document = await _generate(http, emu, body)

    assert status == 422
    assert document["error"].startswith("Failed to deserialize the JSON body")


async def test_generate_rejects_a_body_that_is_not_json(
    emu: RunningEmulator, http: ClientSession
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{emu.url}/generate", data=b"{nope", headers=headers) as response:
        status, document = response.status, await response.json()

    assert status == 400
    assert document["error_type"] == "validation"


async def test_generate_requires_a_json_content_type(
    emu: RunningEmulator, http: ClientSession
) -> None:
    async with http.post(f"{emu.url}/generate", data=b'{"inputs": "x"}') as response:
        status = response.status

    assert status == 415


async def test_sampling_parameters_that_tgi_accepts_are_accepted(
    emu: RunningEmulator, http: ClientSession
) -> None:
    parameters = {"temperature": 0.5, "top_p": 0.9, "top_k": 10, "do_sample": True}

    status, document = await _generate(
        http, emu, {"inputs": prompt_for("hello", "llama-guard-1"), "parameters": parameters}
    )

    assert status == 200
    assert document["generated_text"] == "safe"


async def test_invocations_reports_a_validation_error_as_model_error_422(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": "x", "parameters": {"temperature": 0}}
    async with http.post(f"{emu.url}/endpoints/guard/invocations", json=body) as response:
        status, error_type, document = (
            response.status,
            response.headers["x-amzn-ErrorType"],
            await response.json(),
        )

    assert (status, error_type) == (424, "ModelError")
    assert document["OriginalStatusCode"] == 422
    assert "`temperature` must be strictly positive" in document["OriginalMessage"]


def _too_long_prompt() -> str:
    prompt = "x" * (5000 * 4)
    assert estimate_tokens(prompt) == 5000
    return prompt


async def test_generate_rejects_a_prompt_over_the_token_budget(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": _too_long_prompt(), "parameters": {"max_new_tokens": 32}}

    status, document = await _generate(http, emu, body)

    assert status == 422
    assert document == {"error": BUDGET_MESSAGE, "error_type": "validation"}


async def test_invocations_rejects_a_prompt_over_the_budget_as_model_error(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": _too_long_prompt(), "parameters": {"max_new_tokens": 32}}

    status, document = await _invoke(http, emu, body)

    assert status == 424
    assert document["OriginalStatusCode"] == 422
    assert BUDGET_MESSAGE in document["OriginalMessage"]
    assert document["Message"].startswith("Received client error (422) from primary")


async def test_budget_counts_max_new_tokens(http: ClientSession) -> None:
    prompt = "x" * 400  # 100 estimated tokens
    async with run_emulator(EmulatorConfig(max_total_tokens=132)) as emu:
        fits, _ = await _generate(
            http, emu, {"inputs": prompt, "parameters": {"max_new_tokens": 32}}
        )
        over, _ = await _generate(
            http, emu, {"inputs": prompt, "parameters": {"max_new_tokens": 33}}
        )

    assert (fits, over) == (200, 422)


async def test_budget_errors_count_as_prompt_too_long(
    emu: RunningEmulator, http: ClientSession
) -> None:
    await _generate(http, emu, {"inputs": _too_long_prompt(), "parameters": {"max_new_tokens": 32}})

    assert emu.stats.by_outcome["prompt_too_long"] == 1


async def test_any_endpoint_name_is_accepted_by_default(
    emu: RunningEmulator, http: ClientSession
) -> None:
    status, _ = await _invoke(http, emu, {"inputs": prompt_for("hi")}, endpoint="whatever-name")

    assert status == 200


async def test_endpoint_names_can_be_restricted(http: ClientSession) -> None:
    config = EmulatorConfig(endpoint_names=frozenset({"guard"}))
    async with run_emulator(config) as emu:
        known, _ = await _invoke(http, emu, {"inputs": prompt_for("hi")}, endpoint="guard")
        async with http.post(f"{emu.url}/endpoints/other/invocations", json={"inputs": "x"}) as r:
            unknown, error_type, document = r.status, r.headers["x-amzn-ErrorType"], await r.json()

    assert known == 200
    assert (unknown, error_type) == (400, "ValidationError")
    assert document["Message"] == "Endpoint other of account 123456789012 not found."


async def test_sagemaker_auth_and_routing_headers_are_ignored(
    emu: RunningEmulator, http: ClientSession
) -> None:
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sagemaker",
        "X-Amz-Date": "20260101T000000Z",
        "X-Amzn-SageMaker-Target-Variant": "variant-b",
        "X-Amzn-SageMaker-Custom-Attributes": "trace=1",
    }
    body = {"inputs": prompt_for("hello", "llama-guard-1")}
    async with http.post(
        f"{emu.url}/endpoints/guard/invocations", json=body, headers=headers
    ) as response:
        status, document = response.status, await response.json()

    assert status == 200
    assert document[0]["generated_text"] == "safe"


async def test_invalid_marker_makes_the_model_answer_unparseable_text(
    emu: RunningEmulator, http: ClientSession
) -> None:
    body = {"inputs": prompt_for("EMULATOR:INVALID", "llama-guard-1")}

    status, document = await _invoke(http, emu, body)

    assert status == 200
    assert document[0]["generated_text"] == "I cannot help with that."
    assert emu.stats.by_outcome["invalid_output"] == 1


async def test_unreadable_prompt_gets_a_confused_answer_not_an_error(
    emu: RunningEmulator, http: ClientSession
) -> None:
    status, document = await _generate(http, emu, {"inputs": "Is this message safe?"})

    assert status == 200
    assert document["generated_text"].split("\n")[0] not in ("safe", "unsafe")


@pytest.mark.parametrize("path", ["/health", "/ping"])
async def test_readiness_routes_answer_200(
    path: str, emu: RunningEmulator, http: ClientSession
) -> None:
    async with http.get(emu.url + path) as response:
        assert response.status == 200


async def test_info_describes_the_model_and_token_limits(http: ClientSession) -> None:
    async with (
        run_emulator(EmulatorConfig(max_total_tokens=8192)) as emu,
        http.get(f"{emu.url}/info") as response,
    ):
        info = await response.json()

    assert info["model_id"] == "meta-llama/LlamaGuard-7b"
    assert info["max_total_tokens"] == 8192
    assert info["max_input_tokens"] == 8191


async def test_url_and_port_point_at_the_listening_server(
    emu: RunningEmulator, http: ClientSession
) -> None:
    """The advertised URL answers: a request to it reaches this emulator and is counted."""
    assert emu.url == f"http://127.0.0.1:{emu.port}"
    async with http.post(f"{emu.url}/generate", json={"inputs": prompt_for("hi")}) as response:
        assert response.status == 200
    assert emu.stats.by_route["generate"] == 1
