"""What a recipe file holds. Unknown keys are errors, as in the inventory."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dgxcluster.inventory.schema import ENV_NAME_RE, Strict, secret_in_inventory

RECIPE_NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_RE = r"^\d+\.\d+(\.\d+)?([.+-][A-Za-z0-9.]+)?$"
COMMIT_RE = r"^[0-9a-f]{40}$"


class Recipe(Strict):
    """One model, served across `nodes` DGX Sparks, with flags traced to a public source."""

    name: str = Field(pattern=RECIPE_NAME_RE)
    description: str = Field(min_length=1, max_length=500)
    model: str = Field(min_length=1, max_length=512, pattern=r"^[^-\s][^\s]*$")
    revision: str | None = Field(
        description="the model's commit (40 hex); null only while no public pin is known")
    nodes: int = Field(ge=1, le=64)
    memory_gb: Literal[128, 64] = Field(description="the Spark variant the figures are for")
    executor: Literal["ray", "native"]
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    data_parallel_size: int = Field(default=1, ge=1, le=64)
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    flags: list[str] = Field(default_factory=list, description="other `vllm serve` flags, as argv")
    env: dict[str, str] = Field(default_factory=dict)
    vllm: str = Field(pattern=VERSION_RE, description="the vLLM release the flags are checked against")
    min_vllm: str = Field(pattern=VERSION_RE)
    min_image: str | None = None
    source: str = Field(min_length=10, description="where the flags were published and measured")

    @field_validator("revision")
    @classmethod
    def _commit(cls, v: str | None) -> str | None:
        if v is not None and not re.match(COMMIT_RE, v):
            raise ValueError("must be a full 40-hex commit (a branch moves; pin what was measured)")
        return v

    @field_validator("flags")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        for i, item in enumerate(v):
            if "\0" in item:
                raise ValueError(f"item {i} contains a NUL byte")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if not re.match(ENV_NAME_RE, key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\n" in val or "\0" in val:
                raise ValueError(f"value of {key} must not contain a newline or NUL")
            why = secret_in_inventory(key, val)
            if why:
                raise ValueError(f"{key} looks like a secret ({why}); recipes never hold secrets")
        return v

    @model_validator(mode="after")
    def _topology(self) -> Recipe:
        world = self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size
        if world != self.nodes:
            raise ValueError(f"tensor x pipeline x data parallel = {world}, but nodes = {self.nodes} "
                             "(one GPU per DGX Spark: they must match)")
        return self
