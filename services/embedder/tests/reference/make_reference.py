"""Writes the reference vectors the `local` provider is checked against.

sentence-transformers embeds a fixed set of texts with all-MiniLM-L6-v2 read from a model directory
(the one `ops/fetch-model` fills); the Rust test must agree with every vector (cosine > 0.999).

Installs nothing itself. Run it in a virtual environment that has sentence-transformers and torch
(CPU is enough), from the repository root:

    python3 -m venv .dev/venv-embed
    .dev/venv-embed/bin/pip install sentence-transformers torch
    ops/fetch-model
    .dev/venv-embed/bin/python services/embedder/tests/reference/make_reference.py \
        .dev/models/all-MiniLM-L6-v2 services/embedder/tests/reference/all-MiniLM-L6-v2.json
"""

import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

LONG_PARAGRAPH = " ".join(
    [
        "The ingestion pipeline reads every page of a Confluence space, converts its storage format",
        "to Markdown, splits the Markdown into chunks along its headings and embeds each chunk.",
        "Chunks whose text did not change keep their vectors, so an edit of one paragraph costs one",
        "embedding instead of twenty. Search fuses vector similarity with full-text ranking.",
    ]
    * 3
)

TEXTS = [
    "Hello world",
    "Deployment guide > Rollback\n\nRun `kubectl rollout undo deployment/api` to return to the previous release.",
    "Team handbook > On-call > Escalation\n\n1. Page the secondary.\n2. Open an incident channel.\n3. Post a status update every 30 minutes.",
    "Architecture > Storage\n\n| Table | Rows | Owner |\n| --- | --- | --- |\n| pages | 1.2M | search |\n| chunks | 18M | search |",
    "API reference\n\n```rust\nfn main() {\n    println!(\"{}\", 40 + 2);\n}\n```",
    "Zürich café: naïve façade, 東京 and Ελληνικά, emoji 🚀 and math ∑ x² ≤ ∞.",
    "PROJ-1234 was fixed by @jane.doe in https://example.com/browse/PROJ-1234?focusedCommentId=99#comment",
    "a",
    LONG_PARAGRAPH,
    "Glossary > Terms\n\n- **SLO**: service level objective\n- **SLA**: service level agreement\n- **MTTR**: mean time to recovery",
]


def main() -> None:
    model_dir, out_path = sys.argv[1], sys.argv[2]
    # Built from the parts, as the model's modules.json describes them: a BERT transformer with
    # max_seq_length 256, mean pooling, L2 normalisation.
    transformer = Transformer(model_dir, max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    tokenizer = transformer.tokenizer
    token_counts = [len(tokenizer(text)["input_ids"]) for text in TEXTS]
    assert max(token_counts) <= 256, "a reference text would be truncated"
    vectors = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    document = {
        "model": "all-MiniLM-L6-v2",
        "produced_by": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "cases": [
            {"text": text, "token_count": count, "vector": [float(x) for x in vector]}
            for text, count, vector in zip(TEXTS, token_counts, vectors)
        ],
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False, indent=1)
        out.write("\n")


if __name__ == "__main__":
    main()
