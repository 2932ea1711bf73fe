"""Write a tiny random-weight llama-architecture GGUF (2 layers, width 64) that a real
llama-server loads in about a second, with the tokenizer copied from one of the
vocab-only GGUFs of the llama.cpp tree. Random weights talk nonsense, which is all
an argument check and a throughput measurement need."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

# Head size 32: quantised KV caches (-ctk q8_0, q4_0: blocks of 32) that real manifests ask for work too.
LAYERS, WIDTH, FFN, HEADS = 2, 64, 128, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _copy_tokenizer(vocab: Path, writer: GGUFWriter) -> int:
    reader = GGUFReader(vocab)
    size = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            writer.add_array(name, value)
            if name == "tokenizer.ggml.tokens":
                size = len(value)
        elif kind == GGUFValueType.STRING:
            writer.add_string(name, value)
        elif kind == GGUFValueType.BOOL:
            writer.add_bool(name, value)
        elif kind == GGUFValueType.FLOAT32:
            writer.add_float32(name, value)
        elif kind == GGUFValueType.INT32:
            writer.add_int32(name, value)
        else:
            writer.add_uint32(name, value)
    return size


def write_tiny_model(vocab: Path, out: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(out), "llama")
    writer.add_name("gsw-tiny-random")
    writer.add_context_length(2048)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)
    vocab_size = _copy_tokenizer(vocab, writer)
    writer.add_chat_template(CHAT_TEMPLATE)

    def tensor(name: str, *shape: int, dtype: type = np.float16) -> None:
        data = (
            (rng.standard_normal(shape) * 0.02).astype(dtype)
            if name.endswith("weight") and "norm" not in name
            else np.ones(shape, dtype=np.float32)
        )
        writer.add_tensor(name, data, raw_dtype=GGMLQuantizationType.F16 if data.dtype == np.float16 else GGMLQuantizationType.F32)

    tensor("token_embd.weight", vocab_size, WIDTH)
    tensor("output_norm.weight", WIDTH)
    tensor("output.weight", vocab_size, WIDTH)
    for layer in range(LAYERS):
        prefix = f"blk.{layer}"
        tensor(f"{prefix}.attn_norm.weight", WIDTH)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{prefix}.{name}.weight", WIDTH, WIDTH)
        tensor(f"{prefix}.ffn_norm.weight", WIDTH)
        tensor(f"{prefix}.ffn_gate.weight", FFN, WIDTH)
        tensor(f"{prefix}.ffn_up.weight", FFN, WIDTH)
        tensor(f"{prefix}.ffn_down.weight", WIDTH, FFN)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


if __name__ == "__main__":
    print(write_tiny_model(Path(sys.argv[1]), Path(sys.argv[2])))
