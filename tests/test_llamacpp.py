"""The argv model: the option table, the parser's rules, images, and launch detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webhook.expansion import read_environment
from webhook.images import read_image
from webhook.launch import Launch
from webhook.launch import detect_launch as detect
from webhook.llamacpp import GPU_LAYERS, SPLIT_MODE, TENSOR_SPLIT, ContainerSettings, option_table, parse_options, read_settings


def detect_launch(container: Any, named: bool = False) -> Launch | None:
    container = container if isinstance(container, dict) else {}
    return detect(container, read_image(container.get("image")), read_environment(container), named)


def settings_of(container: dict[str, Any]) -> ContainerSettings:
    launch = detect_launch(container)
    assert launch is not None
    return read_settings(launch.option_tokens, read_environment(container))


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
    settings = settings_of({"name": "x", "command": ["llama-server", "-ngl", "10", "--n-gpu-layers", "20"]})
    assert settings.effective(GPU_LAYERS).value == "20"  # type: ignore[union-attr]


def test_command_line_beats_env() -> None:
    settings = settings_of({"command": ["llama-server", "-sm", "row"], "env": [{"name": "LLAMA_ARG_SPLIT_MODE", "value": "layer"}]})
    effective = settings.effective(SPLIT_MODE)
    assert effective is not None and (effective.value, effective.source) == ("row", "args")


def test_env_from_a_configmap_is_present_but_hidden_and_says_where() -> None:
    env = [{"name": "LLAMA_ARG_N_GPU_LAYERS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    setting = settings_of({"command": ["llama-server"], "env": env}).effective(GPU_LAYERS)
    assert setting is not None and setting.value is None and setting.hidden_in == "configMap/c"


def test_an_argv_value_expanded_from_envfrom_is_hidden() -> None:
    container = {"command": ["llama-server", "-ngl", "$(N_GPU_LAYERS)"], "envFrom": [{"configMapRef": {"name": "llama-config"}}]}
    setting = settings_of(container).effective(GPU_LAYERS)
    assert setting is not None and setting.value is None and setting.hidden_in == "configMap/llama-config"


@pytest.mark.parametrize(
    ("image", "flavour", "backend"),
    [
        ("ghcr.io/ggml-org/llama.cpp:server", "server", "cpu"),
        ("ghcr.io/ggml-org/llama.cpp:server-b6000", "server", "cpu"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda", "server", "cuda"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda12-b9000", "server", "cuda"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda13", "server", "cuda13"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda-b6000@sha256:abc", "server", "cuda"),
        ("ghcr.io/ggml-org/llama.cpp:server-vulkan-b9570@sha256:5e6d", "server", "vulkan"),
        ("ghcr.io/ggml-org/llama.cpp:server-intel-b10752", "server", "intel"),
        ("ghcr.io/ggml-org/llama.cpp:server-s390x", "server", "cpu"),
        ("ghcr.io/ggerganov/llama.cpp:server-rocm", "server", "rocm"),
        ("ghcr.io/ggml-org/llama.cpp:full-cuda", "full", "cuda"),
        ("ghcr.io/ggml-org/llama.cpp:light-musa", "light", "musa"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda-v0.5.0@sha256:5219", "server", "cuda"),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda-nightly", None, None),  # not a tag llama.cpp publishes
        ("ghcr.io/ggml-org/llama.cpp", None, None),
        ("harbor.example/llama-cpp/llama.cpp:vulkan", None, None),
        ("docker.io/library/nginx:1", None, None),
        (None, None, None),
    ],
)
def test_official_images_are_recognised(image: str | None, flavour: str | None, backend: str | None) -> None:
    read = read_image(image)
    assert (read.flavour, read.backend) == (flavour, backend)


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
        ({"image": "any", "command": ["/bin/sh", "-e", "-c", "llama-server -ngl 5"]}, "env", ("-ngl", "5")),
        ({"image": "any", "args": ["/app/llama-server", "-m", "x"]}, "args", ("-m", "x")),
        ({"image": "any", "args": ["llama-server", "-m", "x"]}, "args", ("-m", "x")),
        (
            {"image": "any", "command": ["/usr/libexec/ramalama/ramalama-serve-core"], "args": ["llama-server", "-ngl", "-1"]},
            "env",
            ("-ngl", "-1"),
        ),
        ({"image": "any", "command": ["tini", "--", "/app/llama-server", "-c", "1"]}, "env", ("-c", "1")),
        (
            {"image": "any", "command": ["sh", "-c", "llama-server -ngl $NGL -m ${MODEL}"], "env": [{"name": "NGL", "value": "7"}]},
            "env",
            ("-ngl", "7", "-m", "${MODEL}"),
        ),
        (
            {"image": "any", "args": ["llama-server", "-m", "/models/$(FILE)"], "env": [{"name": "FILE", "value": "m.gguf"}]},
            "args",
            ("-m", "/models/m.gguf"),
        ),
    ],
)
def test_launch_detection(container: dict, channel: str, options: tuple[str, ...]) -> None:
    launch = detect_launch(container)
    assert launch is not None
    assert (launch.channel, launch.option_tokens) == (channel, options)


def test_a_custom_entrypoint_on_an_official_server_image_is_not_llama_server_unless_named() -> None:
    container = {"image": "ghcr.io/ggml-org/llama.cpp:server", "command": ["/entry.sh"]}
    assert detect_launch(container) is None
    launch = detect_launch(container, named=True)
    assert launch is not None and (launch.channel, launch.option_tokens, launch.recognised) == ("env", (), False)


def test_args_that_repeat_the_official_entrypoint_are_noticed() -> None:
    launch = detect_launch({"image": "ghcr.io/ggml-org/llama.cpp:server-cuda", "args": ["/app/llama-server", "-m", "x"]})
    assert launch is not None and launch.repeated_entrypoint == "/app/llama-server"


@pytest.mark.parametrize(
    "container",
    [
        {"image": "ghcr.io/ggml-org/llama.cpp:full", "args": ["--run", "-m", "x"]},
        {"image": "busybox", "command": ["sleep", "1"]},
        {"image": "python:3.11", "command": ["sh", "-c", "python serve.py"]},
        {"image": "busybox", "command": "not a list"},
        {"image": "ghcr.io/ggml-org/llama.cpp:full-cuda"},  # tools.sh without --server prints its help
        {"image": "ghcr.io/ggml-org/llama.cpp:light-cuda", "args": ["-m", "x"]},
        {"image": "example.com/custom:1", "args": ["--host", "0.0.0.0"]},  # entrypoint unknown
        "not a container",
    ],
)
def test_non_llama_containers_are_not_detected(container: object) -> None:
    assert detect_launch(container) is None


def test_a_named_container_always_has_a_launch() -> None:
    launch = detect_launch({"image": "example.com/custom", "command": ["/start.sh"]}, named=True)
    assert launch is not None and launch.channel == "env" and not launch.recognised
