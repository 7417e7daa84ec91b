"""Text inputs for `analyze`: a model's inputs read by name from an .npz, the tokens to show, and
the relevance per token.

A text model takes integer token ids (`input_ids`, and beside them `attention_mask`,
`token_type_ids`, ...); its explainer takes the same inputs and gives, per method, the relevance
per token [batch, seq] (or per embedding coordinate [batch, seq, hidden], summed here over the
hidden dimension; so does a model that takes embeddings). The tokens drawn are the .npz's array
`tokens` (strings [batch, seq]) where it has one, else the ids decoded by a tokenizer the user
passes (a Hugging Face `tokenizer.json`, read by the `tokenizers` package: `pip install
nnxplain[text]`; nothing is downloaded), else the ids themselves. Positions whose `attention_mask`
is 0 (padding) are not drawn.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import NnxplainError
from .runtime import check_feed, load_arrays

TOKENS = "tokens"  # the .npz array of token strings
MASK = "attention_mask"  # the input whose zeros mark padding (Hugging Face's name)
IDS = "input_ids"


def is_text(model, data: str, tokenizer: str | None) -> bool:
    """Whether `analyze` takes the text path: a tokenizer is given, the model has an integer input
    (token ids), or the data is an .npz with an array `tokens`."""
    import onnx
    if tokenizer:
        return True
    try:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(model, load_external_data=False)
        initializers = {t.name for t in proto.graph.initializer}
        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
        if any(i.type.tensor_type.elem_type not in floats for i in proto.graph.input if i.name not in initializers):
            return True
    except Exception:  # an unreadable model: compile says why, on the path it takes
        return False
    if str(data).endswith(".npz") and os.path.isfile(data):
        try:
            return TOKENS in load_arrays(data, "an .npz of the model's inputs")
        except NnxplainError:
            return False
    return False


def read_inputs(path: str, metas) -> tuple[dict, np.ndarray | None]:
    """({input name: array} for every input in `metas` (ONNX Runtime NodeArgs), converted and checked,
    and the `tokens` array or None) from the .npz at `path`, which holds the inputs by name."""
    if not str(path).endswith(".npz"):
        raise NnxplainError(f"--input {path}: a text model's inputs come in an .npz holding one array per input "
                            f"({', '.join(m.name for m in metas)})")
    arrays = load_arrays(path, "an .npz of the model's inputs")
    missing = [m.name for m in metas if m.name not in arrays]
    if missing:
        raise NnxplainError(f"{path}: holds no array '{missing[0]}' for the model's input of that name (it holds "
                            f"{', '.join(str(a) for a in arrays) or 'nothing'})")
    feeds = {m.name: check_feed(m, arrays[m.name](), path) for m in metas}
    sizes = {name: len(a) for name, a in feeds.items()}
    if len(set(sizes.values())) > 1:
        raise NnxplainError(f"{path}: the inputs' batch sizes differ ({', '.join(f'{k}: {v}' for k, v in sizes.items())})")
    tokens = None
    if TOKENS in arrays:
        tokens = arrays[TOKENS]()
        if tokens.dtype.kind not in "US" or tokens.ndim != 2:
            raise NnxplainError(f"{path}: 'tokens' must be strings [batch, seq], got {tokens.dtype.name} "
                                f"{list(tokens.shape)}")
        if feeds and len(tokens) != next(iter(sizes.values())):
            raise NnxplainError(f"{path}: 'tokens' has {len(tokens)} rows for {next(iter(sizes.values()))} inputs")
    return feeds, tokens


def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise NnxplainError("--tokenizer needs the tokenizers package: pip install 'nnxplain[text]'") from None
    if not os.path.isfile(path):
        raise NnxplainError(f"--tokenizer {path}: no such file" if not os.path.exists(path) else
                            f"--tokenizer {path}: not a file")
    try:
        return Tokenizer.from_file(os.fspath(path))
    except Exception as exc:
        raise NnxplainError(f"--tokenizer {path}: not a tokenizer.json ({' '.join(str(exc).split())[:200]})") from None


def token_texts(feeds: dict, tokens: np.ndarray | None, tokenizer, length: int) -> list[list[str]]:
    """The tokens of each text, `length` of them: the given strings, the ids (the input `input_ids`)
    decoded (the vocabulary's token strings), or the ids as numbers (their positions where there
    are no ids)."""
    if tokens is not None:
        if tokens.shape[1] != length:
            raise NnxplainError(f"'tokens' has {tokens.shape[1]} per text, the explanation {length} positions")
        return [[str(t) for t in row] for row in tokens]
    ids = feeds.get(IDS)
    if ids is not None and ids.shape[1] != length:
        ids = None
    if tokenizer is not None:
        if ids is None:
            raise NnxplainError(f"--tokenizer decodes the token ids, the input '{IDS}' [batch, seq], and the "
                                f"model has none")
        size = tokenizer.get_vocab_size()
        texts = []
        for row in ids:
            words = [tokenizer.id_to_token(int(i)) for i in row]
            bad = next((int(i) for i, w in zip(row, words) if w is None), None)
            if bad is not None:
                raise NnxplainError(f"--tokenizer: token id {bad} is not in its vocabulary of {size}")
            texts.append(words)
        return texts
    if ids is not None:
        return [[str(int(i)) for i in row] for row in ids]
    return [[f"[{p}]" for p in range(length)]] * len(next(iter(feeds.values())))


def per_token(relevance: np.ndarray, name: str) -> np.ndarray:
    """Relevance per token [batch, seq] from an explanation [batch, seq] or [batch, seq, hidden]."""
    r = np.asarray(relevance)
    if r.ndim == 2:
        return r
    if r.ndim == 3:
        return r.sum(-1)
    raise NnxplainError(f"explanation '{name}' has shape {list(r.shape)}; a token heatmap draws [batch, seq] or "
                        f"[batch, seq, hidden]")


def attended(feeds: dict, texts: list[list[str]], relevance: np.ndarray) -> tuple[list, list]:
    """The tokens and values to draw of each text: those whose `attention_mask` is not 0."""
    mask = feeds.get(MASK)
    if mask is None or mask.shape != relevance.shape:
        return texts, list(relevance)
    keep = [np.asarray(m) != 0 for m in mask]
    return ([[t for t, k in zip(row, m) if k] for row, m in zip(texts, keep)],
            [r[m] for r, m in zip(relevance, keep)])
