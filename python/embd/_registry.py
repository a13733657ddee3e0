"""The models TextEmbedding knows by name, described as fastembed describes
them (list_supported_models() gives the same dict keys), plus the models
registered with add_custom_model().

embd runs BERT, XLM-RoBERTa and MPNet models from their Hugging Face safetensors, so
`sources.hf` is the original repository (not fastembed's ONNX export) and
`model_file` is model.safetensors. `prompts` are the query/passage prompts
that query_embed/passage_embed apply (a model's own
config_sentence_transformers.json "prompts" take precedence).
"""
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from (fastembed.common.model_description.ModelSource)."""

    hf: str | None = None
    url: str | None = None
    _deprecated_tar_struct: bool = False

    def __post_init__(self):
        if self.hf is None and self.url is None:
            raise ValueError(f"At least one source should be set, current sources: "
                             f"hf={self.hf}, url={self.url}")


class PoolingType(str, enum.Enum):
    """fastembed's PoolingType; embd runs CLS and MEAN."""

    CLS = "CLS"
    MEAN = "MEAN"
    LAST_TOKEN = "LAST_TOKEN"
    DISABLED = "DISABLED"


class Device(str, enum.Enum):
    """fastembed's Device: TextEmbedding(cuda=...)."""

    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


@dataclass(frozen=True)
class DenseModelDescription:
    """fastembed's DenseModelDescription, with embd's prompts and pooling."""

    model: str
    sources: ModelSource
    model_file: str
    description: str
    license: str
    size_in_GB: float
    additional_files: list[str] = field(default_factory=list)
    dim: int | None = None
    tasks: dict[str, Any] | None = field(default_factory=dict)

    def asdict(self):
        return dataclasses.asdict(self)


BGE_QUERY = "Represent this sentence for searching relevant passages: "
BGE_ZH_QUERY = "为这个句子生成表示以用于检索相关文章："


def _d(model, dim, desc, license, size, hf=None, prompts=None):
    return (DenseModelDescription(model=model, sources=ModelSource(hf=hf or model),
                                  model_file="model.safetensors", description=desc,
                                  license=license, size_in_GB=size, dim=dim),
            prompts or {})


_EN512 = "Text embeddings, Unimodal (text), English, 512 input tokens truncation, "
_BUILTIN = [
    _d("BAAI/bge-base-en", 768, _EN512 + "Prefixes for queries/documents: necessary, 2023 year.",
       "mit", 0.44, prompts={"query": BGE_QUERY}),
    _d("BAAI/bge-base-en-v1.5", 768,
       _EN512 + "Prefixes for queries/documents: not so necessary, 2023 year.", "mit", 0.44,
       prompts={"query": BGE_QUERY}),
    _d("BAAI/bge-large-en-v1.5", 1024,
       _EN512 + "Prefixes for queries/documents: not so necessary, 2023 year.", "mit", 1.34,
       prompts={"query": BGE_QUERY}),
    _d("BAAI/bge-small-en", 384, _EN512 + "Prefixes for queries/documents: necessary, 2023 year.",
       "mit", 0.13, prompts={"query": BGE_QUERY}),
    _d("BAAI/bge-small-en-v1.5", 384,
       _EN512 + "Prefixes for queries/documents: not so necessary, 2023 year.", "mit", 0.13,
       prompts={"query": BGE_QUERY}),
    _d("BAAI/bge-small-zh-v1.5", 512,
       "Text embeddings, Unimodal (text), Chinese, 512 input tokens truncation, "
       "Prefixes for queries/documents: not so necessary, 2023 year.", "mit", 0.10,
       prompts={"query": BGE_ZH_QUERY}),
    _d("sentence-transformers/all-MiniLM-L6-v2", 384,
       "Text embeddings, Unimodal (text), English, 256 input tokens truncation, "
       "Prefixes for queries/documents: not necessary, 2021 year.", "apache-2.0", 0.09),
    _d("intfloat/e5-small-v2", 384,
       _EN512 + "Prefixes for queries/documents: necessary (query: / passage: ), 2023 year.",
       "mit", 0.13, prompts={"query": "query: ", "passage": "passage: "}),
    _d("intfloat/e5-base-v2", 768,
       _EN512 + "Prefixes for queries/documents: necessary (query: / passage: ), 2023 year.",
       "mit", 0.44, prompts={"query": "query: ", "passage": "passage: "}),
    _d("mixedbread-ai/mxbai-embed-large-v1", 1024,
       _EN512 + "Prefixes for queries/documents: necessary, 2024 year.", "apache-2.0", 1.34,
       prompts={"query": BGE_QUERY}),
    _d("snowflake/snowflake-arctic-embed-xs", 384,
       _EN512 + "Prefixes for queries/documents: necessary, 2024 year.", "apache-2.0", 0.09,
       hf="Snowflake/snowflake-arctic-embed-xs", prompts={"query": BGE_QUERY}),
    _d("snowflake/snowflake-arctic-embed-s", 384,
       _EN512 + "Prefixes for queries/documents: necessary, 2024 year.", "apache-2.0", 0.13,
       hf="Snowflake/snowflake-arctic-embed-s", prompts={"query": BGE_QUERY}),
    _d("snowflake/snowflake-arctic-embed-m", 768,
       _EN512 + "Prefixes for queries/documents: necessary, 2024 year.", "apache-2.0", 0.44,
       hf="Snowflake/snowflake-arctic-embed-m", prompts={"query": BGE_QUERY}),
    _d("snowflake/snowflake-arctic-embed-l", 1024,
       _EN512 + "Prefixes for queries/documents: necessary, 2024 year.", "apache-2.0", 1.34,
       hf="Snowflake/snowflake-arctic-embed-l", prompts={"query": BGE_QUERY}),
    _d("thenlper/gte-base", 768,
       _EN512 + "Prefixes for queries/documents: not necessary, 2023 year.", "mit", 0.44),
    _d("thenlper/gte-large", 1024,
       _EN512 + "Prefixes for queries/documents: not necessary, 2023 year.", "mit", 1.34),
    # MPNet and the multilingual models (XLM-R SentencePiece tokenizers;
    # XLM-RoBERTa or BERT architectures)
    _d("sentence-transformers/all-mpnet-base-v2", 768,
       "Text embeddings, Unimodal (text), English, 384 input tokens truncation, "
       "Prefixes for queries/documents: not necessary, 2021 year.", "apache-2.0", 0.42),
    _d("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 384,
       "Text embeddings, Unimodal (text), Multilingual (~50 languages), 128 input tokens "
       "truncation, Prefixes for queries/documents: not necessary, 2019 year.", "apache-2.0",
       0.22),
    _d("sentence-transformers/paraphrase-multilingual-mpnet-base-v2", 768,
       "Text embeddings, Unimodal (text), Multilingual (~50 languages), 128 input tokens "
       "truncation, Prefixes for queries/documents: not necessary, 2021 year.", "apache-2.0",
       1.00),
    _d("intfloat/multilingual-e5-small", 384,
       "Text embeddings, Unimodal (text), Multilingual (~100 languages), 512 input tokens "
       "truncation, Prefixes for queries/documents: necessary (query: / passage: ), 2024 year.",
       "mit", 0.47, prompts={"query": "query: ", "passage": "passage: "}),
    _d("intfloat/multilingual-e5-base", 768,
       "Text embeddings, Unimodal (text), Multilingual (~100 languages), 512 input tokens "
       "truncation, Prefixes for queries/documents: necessary (query: / passage: ), 2024 year.",
       "mit", 1.11, prompts={"query": "query: ", "passage": "passage: "}),
    _d("intfloat/multilingual-e5-large", 1024,
       "Text embeddings, Unimodal (text), Multilingual (~100 languages), 512 input tokens "
       "truncation, Prefixes for queries/documents: necessary (query: / passage: ), 2024 year.",
       "mit", 2.24, prompts={"query": "query: ", "passage": "passage: "}),
]


@dataclass
class Entry:
    desc: DenseModelDescription
    prompts: dict
    pooling: PoolingType | None = None  # add_custom_model's; None: the model directory's
    normalization: bool | None = None


_ENTRIES: list[Entry] = [Entry(d, p) for d, p in _BUILTIN]


def entries():
    return list(_ENTRIES)


def find(name):
    """The entry whose model name is `name` (case-insensitive, as fastembed), or None."""
    low = name.lower()
    for e in _ENTRIES:
        if e.desc.model.lower() == low:
            return e
    return None


def add(entry):
    _ENTRIES.append(entry)
