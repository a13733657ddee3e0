"""Load a model exported by bench/export_onnx.py in fastembed (no hub access).

fastembed only knows models by name; add_custom_model registers one with the
pooling and normalization the sentence-transformers directory declares
(1_Pooling/config.json, a Normalize module in modules.json), and specific_model_path points it at the
local export instead of a download.
"""
import json
import os


def pooling_of(model_dir):
    """'mean' or 'cls' from a sentence-transformers model directory."""
    with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    raise ValueError(f"embd: unsupported pooling in {model_dir}: {cfg}")


def load(model_dir, onnx_dir, threads=None):
    """A fastembed TextEmbedding for onnx_dir (exported from model_dir)."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "embd-bench/" + os.path.basename(os.path.normpath(model_dir))
    pooling = PoolingType.CLS if pooling_of(model_dir) == "cls" else PoolingType.MEAN
    with open(os.path.join(model_dir, "modules.json")) as f:
        normalize = any(m["type"].endswith(".Normalize") for m in json.load(f))
    with open(os.path.join(model_dir, "config.json")) as f:
        dim = json.load(f)["hidden_size"]
    if not any(m["model"] == name for m in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(model=name, pooling=pooling, normalization=normalize,
                                       sources=ModelSource(hf=name), dim=dim,
                                       model_file="model.onnx")
    return TextEmbedding(model_name=name, specific_model_path=onnx_dir, threads=threads,
                         local_files_only=True)
