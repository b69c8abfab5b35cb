"""Type stubs of ember's native module (ember._ember); import `ember` instead."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, overload

import numpy as np
import numpy.typing as npt

_Path = str | os.PathLike[str]
_Ids = Iterable[int] | npt.NDArray[np.integer[Any]]
_Messages = Sequence[Mapping[str, Any]]  # OpenAI shape: role, content, tool_calls, tool_call_id, name
_Schema = Mapping[str, Any] | bool | str  # a JSON Schema (dict) or its JSON text
_Tools = Sequence[Mapping[str, Any]]      # [{"type": "function", "function": {"name", "description", "parameters"}}]
_ToolChoice = Literal["auto", "none", "required"] | Mapping[str, Any]

def version() -> str:
    """The ember version, e.g. '0.2.0'."""

def build_info() -> str:
    """Version, CPU features and kernel set, whether the CUDA module was built; one item a line. Does not load CUDA."""

_KvType = Literal["f16", "f32", "q8_0", "q4_0"]

def estimate_memory(
    path: _Path,
    *,
    n_gpu_layers: int = 0,
    use_mmap: bool = True,
    n_ctx: int = 0,
    n_batch: int = 512,
    n_threads: int = 0,
    kv_type: _KvType = "f16",
    kv_type_k: _KvType | None = None,
    kv_type_v: _KvType | None = None,
) -> dict[str, Any]:
    """What Model(path) and one Session would use, in bytes, from the metadata alone: the parts,
    model_host, session_host, host_total, gpu_total, and 'table'."""
def available_memory() -> int:
    """Bytes this process can still get (MemAvailable + SwapFree, the cgroup's limit)."""
def parse_memory_size(text: str) -> int:
    """'512M', '1.5G', '1048576' as bytes."""
def device_info() -> str:
    """The GPUs the CUDA module sees, one line each, or why there are none. Opens the CUDA module."""

# --- errors: one class per ember::ErrorCode, the C++ message unchanged -------

class Error(Exception):
    """Base class of every error ember raises; `code` names the ember error code.
    `result`: what a generation or chat produced before it failed or was cancelled
    (stop_reason 'error' or 'cancelled'); None for every other error."""
    code: ClassVar[str]
    result: GenerateResult | None

class InvalidArgumentError(Error, ValueError):
    """An argument is out of range or malformed (also a ValueError)."""

class InvalidFileError(Error):
    """A file is corrupt, truncated or not what it claims to be."""

class UnsupportedError(Error):
    """Well-formed input that ember does not handle (a version, tensor type or architecture)."""

class NotFoundError(Error):
    """A file, metadata key or tensor does not exist."""

class TypeMismatchError(Error):
    """A metadata value exists but has another type than expected."""

class IoError(Error, OSError):
    """The operating system refused an operation: open, mmap, read (also an OSError)."""

class OutOfMemoryError(Error, MemoryError):
    """An allocation failed (also a MemoryError)."""

class BackendError(Error):
    """A compute backend failed (e.g. the CUDA runtime)."""

class InternalError(Error):
    """A bug in ember; please report it."""

class CancelledError(Error):
    """Session.cancel() interrupted the operation, or was held for it (a cancel that
    arrives while nothing runs stops the next call at once; reset() withdraws it)."""

# --- GGUF files ---------------------------------------------------------------

class GrammarError(InvalidArgumentError):
    """A GBNF grammar that does not parse or is not usable; `line` and `column` (from 1) say where."""
    line: int
    column: int

class SchemaError(Error, ValueError):
    """A JSON Schema ember cannot turn into a grammar: `keyword` and its JSON Pointer `path`."""
    keyword: str
    path: str

class Grammar:
    """A compiled GBNF grammar (llama.cpp's syntax); immutable, shareable."""
    def __init__(self, gbnf: str, root: str = "root") -> None: ...
    @staticmethod
    def from_json_schema(schema: _Schema) -> Grammar: ...
    @staticmethod
    def json_object() -> Grammar: ...
    @staticmethod
    def json_schema_to_gbnf(schema: _Schema) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def root(self) -> str: ...
    def matches(self, text: str) -> bool: ...
    def is_prefix(self, text: str) -> bool: ...
    def random_string(self, seed: int, max_bytes: int = 4096) -> str: ...

class ChatReply:
    """A chat reply with tools: text and calls."""
    @property
    def content(self) -> str: ...
    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """[{"id", "type": "function", "function": {"name", "arguments" (JSON text)}}]"""
    @property
    def result(self) -> GenerateResult: ...
    def message(self) -> dict[str, Any]:
        """{"role": "assistant", "content", "tool_calls"} to append to the conversation."""

class GGUFFile:
    """A GGUF file, mapped read-only and validated."""
    def __init__(self, path: _Path) -> None:
        """Opens and validates the GGUF file at `path`."""
    @property
    def version(self) -> int:
        """The GGUF format version (2 or 3)."""
    @property
    def path(self) -> str:
        """The path the file was opened with."""
    @property
    def alignment(self) -> int:
        """The alignment of tensor data in bytes."""
    @property
    def data_offset(self) -> int:
        """The byte offset of the tensor data section."""
    @property
    def metadata(self) -> dict[str, Any]:
        """Every metadata key and value, in file order (numeric arrays as NumPy arrays)."""
    @property
    def metadata_types(self) -> dict[str, str]:
        """The GGUF type of every metadata value, e.g. 'uint32' or 'array[string]'."""
    @property
    def tensors(self) -> list[dict[str, Any]]:
        """One dict per tensor: name, type, shape (ggml order), offset, bytes."""
    def dequantize(self, name: str) -> npt.NDArray[np.float32]:
        """The tensor as float32, shaped in NumPy order (reversed ggml shape)."""

# --- models, sessions, generation ----------------------------------------------

class ModelInfo:
    """The shape of a model (Model.info)."""
    @property
    def arch(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_ctx_train(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_head(self) -> int: ...
    @property
    def n_head_kv(self) -> int: ...
    @property
    def n_ff(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def weight_bytes(self) -> int: ...

class GenerateResult:
    """What a finished generation produced (Generation.result)."""
    @property
    def text(self) -> str:
        """The generated text, stop string excluded."""
    @property
    def tokens(self) -> list[int]:
        """The generated token ids (including a final end-of-generation token)."""
    @property
    def stop_reason(
        self,
    ) -> Literal["max_tokens", "eog", "stop_string", "callback", "cancelled", "context_full"]:
        """Why generation ended ('callback': the Generation was closed early)."""
    @property
    def n_prompt_tokens(self) -> int: ...
    @property
    def prompt_ms(self) -> float: ...
    @property
    def generate_ms(self) -> float: ...
    @property
    def time_to_first_token_ms(self) -> float: ...

class Generation(Iterator[str]):
    """A generation in progress: an iterator of str pieces.

    next() releases the GIL while the next token is computed. Closing it early
    (break, close(), a `with` block, dropping it) stops the generation where it is.
    """
    def __iter__(self) -> Generation: ...
    def __next__(self) -> str:
        """The next piece of text; StopIteration at the end."""
    def close(self) -> None:
        """Stops the generation (if still running) and waits for it to end."""
    def __enter__(self) -> Generation: ...
    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    @property
    def done(self) -> bool:
        """True once the generation has ended."""
    @property
    def text(self) -> str:
        """The pieces returned so far, joined."""
    @property
    def result(self) -> GenerateResult | None:
        """The GenerateResult once the generation has ended (None before)."""
    @property
    def stop_reason(self) -> str | None:
        """GenerateResult.stop_reason once the generation has ended (None before)."""
    @property
    def reply(self) -> ChatReply | None:
        """chat(..., tools=..., stream=True): the ChatReply once the generation has ended."""


class Model:
    """A loaded GGUF model, immutable and shareable between sessions and threads."""
    def __init__(
        self, path: _Path, n_gpu_layers: int = 0, *, use_mmap: bool = True, memory_budget: int | str | None = None
    ) -> None:
        """Loads the model; NotFoundError, InvalidFileError, UnsupportedError, ... on failure;
        OutOfMemoryError before the weights are read when its estimate exceeds memory_budget."""
    @property
    def path(self) -> str: ...
    @property
    def info(self) -> ModelInfo: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any]:
        """Every GGUF metadata key and value, in file order."""
    @property
    def chat_template(self) -> str: ...
    @property
    def bos_token_id(self) -> int | None: ...
    @property
    def eos_token_id(self) -> int | None: ...
    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens."""
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`."""
    def detokenize(self, ids: _Ids, remove_special: bool = False, render_special: bool = False) -> str:
        """The text of token ids (inverts tokenize)."""
    def apply_chat_template(self, messages: _Messages, add_generation_prompt: bool = True) -> str:
        """Renders a conversation with the model's chat template."""
    def session(
        self,
        *,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int = 0,
        kv_type: _KvType = "f16",
        precision: Literal["default", "fast", "exact"] = "default",
        adapters: _Adapters | None = None,
        kv_type_k: _KvType | None = None,
        kv_type_v: _KvType | None = None,
        memory_budget: int | str | None = None,
    ) -> Session:
        """A new Session over this model."""
    def load_adapter(self, path: _Path) -> Adapter:
        """Loads a LoRA adapter (llama.cpp's GGUF format) for this model; InvalidFileError naming the
        tensor and shapes when it does not fit, UnsupportedError for a kind ember cannot apply."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[False] = False,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int = 0,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
        grammar: str | Grammar | None = None,
        json_schema: _Schema | None = None,
        response_format: Mapping[str, Any] | Grammar | None = None,
    ) -> str:
        """The assistant's reply in a new session."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[False] = False,
        tools: _Tools,
        tool_choice: _ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int = 0,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
    ) -> ChatReply:
        """The reply with tools: its text and its calls (arguments valid against their schemas)."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[True],
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int = 0,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
        grammar: str | Grammar | None = None,
        json_schema: _Schema | None = None,
        response_format: Mapping[str, Any] | Grammar | None = None,
    ) -> Generation:
        """The assistant's reply in a new session, streamed."""

class Adapter:
    """A LoRA adapter loaded for a model (Model.load_adapter)."""
    @property
    def path(self) -> str: ...
    @property
    def model(self) -> Model: ...
    @property
    def name(self) -> str: ...
    @property
    def alpha(self) -> float: ...
    @property
    def rank(self) -> int: ...
    @property
    def targets(self) -> list[dict[str, Any]]:
        """[{'tensor', 'rank', 'n_in', 'n_out', 'type_a', 'type_b'}, ...]"""
    @property
    def n_params(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any]: ...

_Adapters = Sequence[Adapter | tuple[Adapter, float]]

class Session:
    """One conversation with a model: its own KV cache, threads and buffers."""
    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int = 0,
        kv_type: _KvType = "f16",
        precision: Literal["default", "fast", "exact"] = "default",
        adapters: _Adapters | None = None,
        kv_type_k: _KvType | None = None,
        kv_type_v: _KvType | None = None,
        memory_budget: int | str | None = None,
    ) -> None: ...
    def set_adapters(self, adapters: _Adapters) -> None:
        """Applies LoRA adapters [(Adapter, scale), ...], stacked; [] removes them. A new list keeps the
        history and re-evaluates it at the next call."""
    @property
    def adapters(self) -> list[tuple[Adapter, float]]:
        """The adapters applied, with their scales (a new list)."""
    def eval(self, tokens: _Ids, all_logits: bool = False) -> npt.NDArray[np.float32] | None:
        """Runs the forward pass over `tokens` (GIL released)."""
    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """A read-only view (no copy) of the last token's logits, shape (n_vocab,); overwritten by the
        next eval()/generate(); None when there is no such row."""
    def generate(
        self,
        prompt: str | _Ids,
        *,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        add_special: bool = True,
        parse_special: bool = True,
        grammar: str | Grammar | None = None,
        json_schema: _Schema | None = None,
    ) -> Generation:
        """Generates text after `prompt`, streaming it as a Generation of str pieces."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[False] = False,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
        grammar: str | Grammar | None = None,
        json_schema: _Schema | None = None,
        response_format: Mapping[str, Any] | Grammar | None = None,
    ) -> str:
        """The assistant's reply to the whole conversation (the cached prefix is reused)."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[False] = False,
        tools: _Tools,
        tool_choice: _ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
    ) -> ChatReply:
        """The reply with tools: its text and its calls (arguments valid against their schemas)."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        stream: Literal[True],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        ignore_eos: bool = False,
        parse_special: bool = False,
        grammar: str | Grammar | None = None,
        json_schema: _Schema | None = None,
        response_format: Mapping[str, Any] | Grammar | None = None,
    ) -> Generation:
        """The assistant's reply to the whole conversation, streamed."""
    @overload
    def save(self, path: _Path) -> None: ...
    @overload
    def save(self, path: None = None) -> bytes: ...
    def save(self, path: _Path | None = None) -> bytes | None:
        """Saves the state (history, KV rows in use, last logits, adapter set) to `path`, atomically,
        or returns it as bytes."""
    def load(self, source: _Path | bytes | bytearray | memoryview) -> None:
        """Replaces the state with a saved one; InvalidFileError / InvalidArgumentError (session unchanged)
        for a corrupt file or one of another model, KV type, larger context or adapter set."""
    @property
    def kv_type_k(self) -> _KvType: ...
    @property
    def kv_type_v(self) -> _KvType: ...
    @property
    def kv_cache_bytes(self) -> int: ...
    def reset(self) -> None:
        """Empties the history."""
    def truncate(self, n: int) -> None:
        """Keeps the first n tokens of the history."""
    def cancel(self) -> None:
        """Stops the eval() or generation running now on another thread; safe from any thread."""
    @property
    def tokens(self) -> list[int]: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_batch(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def precision(self) -> Literal["fast", "exact"]:
        """The precision in use (after resolving 'default')."""
    @property
    def model(self) -> Model: ...
    @property
    def warnings(self) -> list[str]: ...
