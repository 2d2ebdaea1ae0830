"""The end-to-end suite again, the body an OpenAI completions body sent through SageMaker (LMI).

Every test and fixture of ``test_worker_end_to_end`` is collected here too; only ``model_route``
differs (a direct parameter overrides the fixture of that name). A module of its own, not one
more parameter in that module, so that the parallel run (``--dist loadfile``) gives each route
its own worker.
"""

from __future__ import annotations

import pytest
from test_worker_end_to_end import *  # noqa: F403 - the whole suite, collected again
from worker_harness import SAGEMAKER_OPENAI

pytestmark = pytest.mark.parametrize("model_route", [SAGEMAKER_OPENAI], ids=[SAGEMAKER_OPENAI.id])
