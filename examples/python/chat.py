#!/usr/bin/env python3
"""An interactive chat with a GGUF model through ember's Python API, the reply
streamed as it is generated.

    python examples/python/chat.py models/SmolLM2-135M-Instruct.Q4_1.gguf -c 2048 -t 2

Type a message and press Enter; /reset starts over, /quit (or Ctrl-D) ends.
Ctrl-C while the model answers stops the answer. Needs the package `ember`:
`pip install .` from the repository root, or PYTHONPATH=build/python after a
build with -DEMBER_PYTHON=ON.
"""
import argparse
import sys

import ember


def main() -> int:
    ap = argparse.ArgumentParser(description="Chat with a GGUF model (streaming).")
    ap.add_argument("model", help="the GGUF model file")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0, help="layers to run on the GPU (default 0)")
    ap.add_argument("-c", "--ctx-size", type=int, default=0,
                    help="context size in tokens (default: the model's, at most 4096)")
    ap.add_argument("-t", "--threads", type=int, default=0, help="threads (default: one per core)")
    ap.add_argument("-n", "--n-predict", type=int, default=512, help="most tokens per reply (default 512)")
    ap.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    ap.add_argument("--system", default=None, help="a system message")
    args = ap.parse_args()

    try:
        model = ember.Model(args.model, n_gpu_layers=args.n_gpu_layers)
        session = model.session(n_ctx=args.ctx_size, n_threads=args.threads)
    except ember.Error as e:
        print(f"chat.py: error: {e}", file=sys.stderr)
        return 1
    print(f"{model.info.name or model.info.arch}: {model.info.n_params / 1e6:.0f}M parameters, "
          f"context {session.n_ctx}, {session.n_threads} threads. /reset, /quit", file=sys.stderr)

    first = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(first)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line.strip():
            continue
        if line.strip() == "/quit":
            return 0
        if line.strip() == "/reset":
            messages = list(first)
            session.reset()
            continue
        messages.append({"role": "user", "content": line})
        reply = session.chat(messages, stream=True, max_tokens=args.n_predict, temperature=args.temp)
        try:
            for piece in reply:  # each piece as soon as its token is generated
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            reply.close()
            print(" [stopped]", end="")
        except ember.Error as e:  # e.g. the conversation no longer fits in the context
            print(f"\nchat.py: error: {e}", file=sys.stderr)
            messages.pop()
            continue
        print()
        messages.append({"role": "assistant", "content": reply.text})


if __name__ == "__main__":
    sys.exit(main())
