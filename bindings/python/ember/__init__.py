"""ember: run quantized GGUF language models on CPUs and NVIDIA GPUs.

    import ember

    model = ember.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    session = model.session(n_ctx=2048, n_threads=2)

    # streaming: pieces of text arrive as the tokens are generated
    for piece in session.generate("The capital of France is", max_tokens=16, temperature=0):
        print(piece, end="", flush=True)

    # chat: the model's own template; the whole conversation every turn
    reply = session.chat([{"role": "user", "content": "Hi!"}], max_tokens=64)

    # output a program can trust: a grammar, a JSON Schema, tool calls
    text = session.generate("Yes or no?", grammar='root ::= "yes" | "no"').result.text
    data = session.chat(messages, response_format={"type": "json_object"})
    reply = session.chat(messages, tools=[{"type": "function", "function": {...}}])
    for call in reply.tool_calls: ...   # {"id", "type": "function", "function": {"name", "arguments"}}

    # tokens and logits: a NumPy view of the session's buffer, no copy
    session.reset()
    session.eval(model.tokenize("Hello"))
    next_id = int(session.logits.argmax())

Every error is an ember.Error subclass, one per C++ error code
(NotFoundError, InvalidArgumentError, InvalidFileError, ...), carrying the
C++ message. Evaluation and generation release the GIL: sessions on other
Python threads (also over the same model) run at the same time.

The GGUF reader is here too: ember.GGUFFile(path).metadata, .tensors,
.dequantize(name).
"""
from ._ember import (
    BackendError,
    Adapter,
    CancelledError,
    ChatReply,
    Error,
    GenerateResult,
    Generation,
    GGUFFile,
    Grammar,
    GrammarError,
    InternalError,
    InvalidArgumentError,
    InvalidFileError,
    IoError,
    Model,
    ModelInfo,
    NotFoundError,
    OutOfMemoryError,
    SchemaError,
    Session,
    TypeMismatchError,
    UnsupportedError,
    available_memory,
    build_info,
    device_info,
    estimate_memory,
    parse_memory_size,
    version,
)

__all__ = [
    "Adapter",
    "BackendError",
    "CancelledError",
    "ChatReply",
    "Error",
    "GenerateResult",
    "Generation",
    "GGUFFile",
    "Grammar",
    "GrammarError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidFileError",
    "IoError",
    "Model",
    "ModelInfo",
    "NotFoundError",
    "OutOfMemoryError",
    "SchemaError",
    "Session",
    "TypeMismatchError",
    "UnsupportedError",
    "available_memory",
    "build_info",
    "device_info",
    "estimate_memory",
    "parse_memory_size",
    "version",
]
__version__ = version()
