"""Redaction of collected bytes: by known value, by secret-looking name, by token shape."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgxcluster.inventory.schema import secret_in_inventory
from dgxcluster.secrets import MASK, SECRET_NAME_WORDS, CollectedRedactor, Redactor, Secret

TOKEN = "hf_" + "Ab1" * 12


@pytest.mark.parametrize(
    "text",
    [
        f"HF_TOKEN={TOKEN}",
        f'"Env": ["PATH=/usr/bin", "HF_TOKEN={TOKEN}"]',
        f'{{"HF_TOKEN": "{TOKEN}"}}',
        f"HF_TOKEN: {TOKEN}",
        f"export HF_TOKEN='{TOKEN}'",
        f'\\"HF_TOKEN\\": \\"{TOKEN}\\"',
        f"hf_token={TOKEN}",
        f"non-default args: {{'model': 'x', 'hf_token': '{TOKEN}'}}",
        f"downloading with token {TOKEN} now",
    ],
)
def test_hf_token_is_masked_in_every_form(text: str) -> None:
    out = CollectedRedactor().text(text)
    assert TOKEN not in out
    assert MASK in out


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("WANDB_API_KEY=abc123def", "abc123def"),
        ("DB_PASSWORD=s3cr3t!", "s3cr3t!"),
        ('"MY_SECRET": "plainvalue"', "plainvalue"),
        ("GITHUB_TOKEN=ghp_xyz", "ghp_xyz"),
        ("HUGGING_FACE_HUB_TOKEN=short", "short"),
    ],
)
def test_secret_looking_names_are_masked(line: str, secret: str) -> None:
    assert CollectedRedactor().text(line) == line.replace(secret, MASK)


def test_names_from_the_inventory_are_masked_whatever_they_look_like() -> None:
    red = CollectedRedactor(["CORP_CREDENTIAL"])
    assert red.text("CORP_CREDENTIAL=letmein") == f"CORP_CREDENTIAL={MASK}"
    assert red.text("corp_credential: letmein") == f"corp_credential: {MASK}"


def test_known_values_are_masked_anywhere() -> None:
    values = Redactor()
    values.add(Secret("opaque-value-42", "X"))
    out = CollectedRedactor(values=values).text("the value opaque-value-42 leaked")
    assert out == f"the value {MASK} leaked"


def test_ordinary_text_is_left_alone() -> None:
    text = ("max_num_batched_tokens=8192 tokens=12 PATH=/usr/bin NCCL_IB_HCA=rocep1s0f1 "
            "VLLM_HOST_IP=10.0.0.1 hf_short")
    assert CollectedRedactor().text(text) == text


def test_docker_inspect_env_is_redacted_and_stays_json() -> None:
    doc = [{"Config": {"Env": [f"HF_TOKEN={TOKEN}", "WANDB_API_KEY=k-123", "A=b"]}}]
    out = CollectedRedactor().text(json.dumps(doc, indent=2))
    assert json.loads(out)[0]["Config"]["Env"] == [f"HF_TOKEN={MASK}", f"WANDB_API_KEY={MASK}",
                                                   "A=b"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_a_token_split_across_chunks_is_still_masked(cuts: list[int]) -> None:
    data = (f"start\nsome line HF_TOKEN={TOKEN} end\nother {TOKEN} x\n" * 3).encode()
    out: list[bytes] = []
    w = CollectedRedactor().writer(out.append)
    pos = 0
    for n in cuts:
        w.feed(data[pos : pos + n])
        pos += n
    w.feed(data[pos:])
    w.close()
    joined = b"".join(out)
    assert TOKEN.encode() not in joined
    assert joined.count(MASK.encode()) == 6


@pytest.mark.parametrize("word", SECRET_NAME_WORDS)
def test_one_list_of_secret_names_for_the_inventory_and_for_collected_text(word: str) -> None:
    name = f"MY_{word}"
    assert CollectedRedactor().text(f"{name}=abcd1234xyz") == f"{name}={MASK}"
    assert secret_in_inventory(name, "abcd1234xyz") == "its name says it is a secret"


def test_one_token_shape_everywhere() -> None:
    assert CollectedRedactor().text(f"see {TOKEN} here") == f"see {MASK} here"
    assert Redactor().display(f"see {TOKEN} here") == f"see {MASK} here"
    assert secret_in_inventory("ANYTHING", TOKEN) == "its value is a Hugging Face token"
    short = "hf_" + "a" * 19  # one letter short of the shape
    assert CollectedRedactor().text(short) == short and secret_in_inventory("X", short) is None
