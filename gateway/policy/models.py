"""The `models` section: one logical model name, and what each upstream calls it.

Ollama says `llama3.1:8b`, LM Studio `lmstudio-community/meta-llama-3.1-8b-instruct`, MLX a
Hugging Face path. Mapping a logical name to each upstream's id defines "the same model
elsewhere", so a request can move to a host that names it differently (offload, failover).
A model not listed here is sent under the name the client used.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, RootModel

from gateway.policy.spec import ModelSpec

ModelIds = dict[
    Annotated[str, Field(min_length=1, description="upstream name")],
    Annotated[str, Field(min_length=1, description="that upstream's id for the model")],
]


class ModelsModel(RootModel[dict[str, ModelIds]]):
    """`{logical name: {upstream name: upstream's model id}}`."""

    root: dict[str, ModelIds] = {}

    def to_spec(self) -> tuple[ModelSpec, ...]:
        return tuple(ModelSpec(name, tuple(sorted(ids.items()))) for name, ids in self.root.items())
