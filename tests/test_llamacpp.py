"""The argv model: the option table, the parser's rules, and launch detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.llamacpp import (
    GPU_LAYERS,
    SPLIT_MODE,
    TENSOR_SPLIT,
    detect_launch,
    image_flavour,
    option_table,
    parse_options,
    read_settings,
)

SHARED_TABLE = Path(__file__).resolve().parents[2] / "shared" / "llama-server" / "args.tsv"


@pytest.mark.skipif(not SHARED_TABLE.exists(), reason="../shared is not beside this checkout")
def test_packaged_table_is_the_shared_one() -> None:
    packaged = Path(__file__).resolve().parents[1] / "webhook" / "data" / "llama-server-args.tsv"
    assert packaged.read_text() == SHARED_TABLE.read_text()


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("-ngl", GPU_LAYERS),
        ("--gpu-layers", GPU_LAYERS),
        ("--n-gpu-layers", GPU_LAYERS),
        ("--n_gpu_layers", GPU_LAYERS),
        ("-sm", SPLIT_MODE),
        ("--split_mode", SPLIT_MODE),
        ("-ts", TENSOR_SPLIT),
        ("--tensor-split", TENSOR_SPLIT),
        ("-mg", "LLAMA_ARG_MAIN_GPU"),
        ("-dev", "LLAMA_ARG_DEVICE"),
        ("-fit", "LLAMA_ARG_FIT"),
    ],
)
def test_every_spelling_maps_to_one_option(spelling: str, key: str) -> None:
    spec = option_table().lookup(spelling)
    assert spec is not None and spec.key == key


@pytest.mark.parametrize("spelling", ["-ngld", "--spec-draft-ngl", "--n-gpu-layers-draft", "-devd", "--device-draft"])
def test_draft_options_are_not_main_model_gpu_options(spelling: str) -> None:
    spec = option_table().lookup(spelling)
    assert spec is not None
    assert spec.key not in (GPU_LAYERS, "LLAMA_ARG_DEVICE")


def test_single_dash_options_have_no_underscore_form() -> None:
    assert option_table().lookup("-n_gpu_layers") is None


def test_value_is_the_next_token_even_when_it_starts_with_a_dash() -> None:
    options = parse_options(["--reverse-prompt", "-ngl", "--port", "8080"])
    assert [(o.key, o.values) for o in options] == [("--reverse-prompt", ("-ngl",)), ("LLAMA_ARG_PORT", ("8080",))]


def test_zero_value_flags_take_no_value() -> None:
    options = parse_options(["--metrics", "-ngl", "99"])
    assert [o.key for o in options] == ["LLAMA_ARG_ENDPOINT_METRICS", GPU_LAYERS]
    assert options[1].values == ("99",)


def test_inline_values_are_seen_and_marked() -> None:
    (option,) = parse_options(["--tensor-split=1,1"])
    assert option.key == TENSOR_SPLIT and option.inline and option.values == ("1,1",)


def test_the_last_repeated_option_wins() -> None:
    launch = detect_launch({"name": "x", "command": ["llama-server", "-ngl", "10", "--n-gpu-layers", "20"]})
    assert launch is not None
    assert read_settings(launch, None).effective(GPU_LAYERS).value == "20"  # type: ignore[union-attr]


def test_command_line_beats_env() -> None:
    launch = detect_launch({"command": ["llama-server", "-sm", "row"]})
    assert launch is not None
    settings = read_settings(launch, [{"name": "LLAMA_ARG_SPLIT_MODE", "value": "layer"}])
    effective = settings.effective(SPLIT_MODE)
    assert effective is not None and (effective.value, effective.source) == ("row", "args")


def test_env_from_a_secret_is_present_but_unknown() -> None:
    launch = detect_launch({"command": ["llama-server"]})
    assert launch is not None
    settings = read_settings(launch, [{"name": "LLAMA_ARG_N_GPU_LAYERS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])
    setting = settings.effective(GPU_LAYERS)
    assert setting is not None and setting.value is None


@pytest.mark.parametrize(
    ("image", "flavour"),
    [
        ("ghcr.io/ggml-org/llama.cpp:server", "server"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda", "server"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda-b6000@sha256:abc", "server"),
        ("ghcr.io/ggerganov/llama.cpp:server-cuda", "server"),
        ("ghcr.io/ggml-org/llama.cpp:full-cuda", "full"),
        ("ghcr.io/ggml-org/llama.cpp:light-cuda", None),
        ("docker.io/library/nginx:1", None),
        (None, None),
    ],
)
def test_official_images_are_recognised(image: str | None, flavour: str | None) -> None:
    assert image_flavour(image) == flavour


@pytest.mark.parametrize(
    ("container", "channel", "options"),
    [
        ({"image": "ghcr.io/ggml-org/llama.cpp:server-cuda", "args": ["-m", "x"]}, "args", ("-m", "x")),
        ({"image": "any", "command": ["/app/llama-server", "-m", "x"], "args": ["-c", "1"]}, "args", ("-m", "x", "-c", "1")),
        ({"image": "any", "command": ["/app/llama", "serve"], "args": ["-m", "x"]}, "args", ("-m", "x")),
        ({"image": "ghcr.io/ggml-org/llama.cpp:full", "args": ["-s", "-m", "x"]}, "args", ("-m", "x")),
        ({"image": "any", "command": ["/app/tools.sh", "--server", "-m", "x"]}, "args", ("-m", "x")),
        ({"image": "any", "command": ["sh", "-c", "llama-server -m x | tee log"]}, "env", ("-m", "x")),
        ({"image": "any", "command": ["bash", "-ec"], "args": ["exec llama-server -ngl 5"]}, "env", ("-ngl", "5")),
        ({"image": "ghcr.io/ggml-org/llama.cpp:server", "command": ["/entry.sh"]}, "env", ()),
    ],
)
def test_launch_detection(container: dict, channel: str, options: tuple[str, ...]) -> None:
    launch = detect_launch(container)
    assert launch is not None
    assert (launch.channel, launch.option_tokens) == (channel, options)


@pytest.mark.parametrize(
    "container",
    [
        {"image": "ghcr.io/ggml-org/llama.cpp:full", "args": ["--run", "-m", "x"]},
        {"image": "busybox", "command": ["sleep", "1"]},
        {"image": "python:3.11", "command": ["sh", "-c", "python serve.py"]},
        {"image": "busybox", "command": "not a list"},
        "not a container",
    ],
)
def test_non_llama_containers_are_not_detected(container: object) -> None:
    assert detect_launch(container) is None


def test_a_named_container_always_has_a_launch() -> None:
    launch = detect_launch({"image": "example.com/custom", "command": ["/start.sh"]}, named=True)
    assert launch is not None and launch.channel == "env" and not launch.recognised
