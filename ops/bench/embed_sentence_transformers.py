"""The sentence-transformers side of ops/bench/embed: embeds the same chunk texts with the same
model (PyTorch, CPU) and prints one JSON object with its throughput and its agreement with the
vectors of the `local` provider.

Usage: embed_sentence_transformers.py MODEL_DIR TEXTS_JSON RUST_VECTORS_JSON
"""

import json
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer


def main() -> None:
    model_dir, texts_path, rust_vectors_path = sys.argv[1:4]
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    transformer = Transformer(model_dir, max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.encode(texts[:8], batch_size=32)  # warm-up, as on the Rust side
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    with open(rust_vectors_path, encoding="utf-8") as f:
        rust = np.asarray(json.load(f), dtype=np.float32)
    cosines = np.sum(rust * vectors, axis=1) / (
        np.linalg.norm(rust, axis=1) * np.linalg.norm(vectors, axis=1)
    )
    print(
        json.dumps(
            {
                "chunks": len(texts),
                "seconds": seconds,
                "chunks_per_second": len(texts) / seconds,
                "torch_threads": torch.get_num_threads(),
                "min_cosine_to_local": float(cosines.min()),
            }
        )
    )


if __name__ == "__main__":
    main()
