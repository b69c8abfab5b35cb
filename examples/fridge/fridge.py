#!/usr/bin/env python3
"""The kitchen assistant of fridge.c, through ember's Python API: the same tools (tools.json), the
same simulated fridge, the same transcript on stdout, one event a line:

    USER: <line>
    CALL <name> <arguments JSON>
    RESULT <name> <result JSON>
    ASSISTANT: <text, newlines as spaces>
    ERROR: <message>            (a turn that failed; the program goes on, and exits 1 at the end)
    STATE <json>                (last line: the fridge after the session)

    python examples/fridge/fridge.py [--model MODEL] < lines

The grammar ember builds from the tools' schemas guarantees that every call names one of the tools and
that its arguments match the schema, so nothing here re-checks them; the per-zone temperature range,
which the schema cannot say, is checked and answered with an error result the model reads.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import ember

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
TOOLS = json.loads((HERE / "tools.json").read_text(encoding="utf-8"))

# the limits of fridge.c, so both programs behave the same
MAX_LINE = 2048        # bytes of one user line, newline included
MAX_TOOL_ROUNDS = 2    # chat calls that may end in tool calls, per user line (see fridge.c for why)
KEEP_TURNS = 0         # earlier user turns kept in the conversation (see fridge.c for why)
MAX_TOKENS = 256
N_CTX = 4096
MAX_ITEMS = 32
MAX_ORDERS = 16

SYSTEM_PROMPT = ("You are the assistant built into a kitchen fridge. Answer questions briefly. "
                 "For commands (shopping list, temperatures, orders, what is inside), call the tools.")
ZONE_RANGE = {"fridge": (1, 7), "freezer": (-24, -16)}


def dumps(value) -> str:
    """Compact JSON, byte for byte as fridge.c writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def clean(s: str) -> str:
    """A lone surrogate (a \\ud800 the model wrote) becomes U+FFFD, as fridge.c decodes it."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Fridge:
    def __init__(self) -> None:
        self.celsius = {"fridge": 4, "freezer": -18}
        self.inventory = [
            {"item": "milk", "quantity": 1, "unit": "litres", "zone": "fridge"},
            {"item": "eggs", "quantity": 6, "unit": "pieces", "zone": "fridge"},
            {"item": "butter", "quantity": 1, "unit": "packs", "zone": "fridge"},
            {"item": "cheese", "quantity": 200, "unit": "grams", "zone": "fridge"},
            {"item": "peas", "quantity": 500, "unit": "grams", "zone": "freezer"},
            {"item": "ice cream", "quantity": 1, "unit": "packs", "zone": "freezer"},
        ]
        self.shopping_list: list[dict] = []
        self.orders: list[dict] = []

    def run(self, name: str, args: dict) -> dict:
        """One call; its result. The arguments are valid for the tool's schema."""
        if name == "add_to_shopping_list":
            if len(self.shopping_list) == MAX_ITEMS:
                return {"ok": False, "error": "the shopping list is full; order the groceries first"}
            it = {"item": clean(args["item"]), "quantity": args["quantity"], "unit": args["unit"]}
            self.shopping_list.append(it)
            return {"ok": True, "added": it, "list_size": len(self.shopping_list)}
        if name == "order_groceries":
            if not self.shopping_list:
                return {"ok": False, "error": "the shopping list is empty: nothing to order"}
            if len(self.orders) == MAX_ORDERS:
                return {"ok": False, "error": "too many orders today; try again tomorrow"}
            self.orders.append({"order": len(self.orders) + 1, "items": self.shopping_list})
            self.shopping_list = []
            return {"ok": True, **copy.deepcopy(self.orders[-1])}
        if name == "set_temperature":
            zone, c = args["zone"], args["celsius"]
            lo, hi = ZONE_RANGE[zone]
            # the schema bounds celsius to the union of the zones' ranges; each zone has its own
            if not lo <= c <= hi:
                return {"ok": False, "error": f"the {zone} takes {lo} to {hi} degrees Celsius"}
            self.celsius[zone] = c
            return {"ok": True, "zone": zone, "celsius": c}
        if name == "get_inventory":
            return {"ok": True, "temperatures": dict(self.celsius), "items": copy.deepcopy(self.inventory)}
        return {"ok": False, "error": "no such tool"}  # the grammar allows only the tools given

    def state(self) -> dict:
        return {"temperatures": self.celsius, "inventory": self.inventory, "shopping_list": self.shopping_list,
                "orders": self.orders}


def one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def trim_history(messages: list[dict]) -> None:
    """Keeps the system message and the last KEEP_TURNS user turns."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if len(users) > KEEP_TURNS:
        del messages[1:users[len(users) - KEEP_TURNS] if KEEP_TURNS else len(messages)]


def run_turn(sess, messages: list[dict], line: str, fridge: Fridge) -> bool:
    """One user line: chat until the model answers in text (or MAX_TOOL_ROUNDS rounds of calls, after
    which the tools are withdrawn so it must answer). False after printing ERROR, the turn's messages
    dropped from the conversation."""
    start = len(messages)
    print(f"USER: {one_line(line)}")
    messages.append({"role": "user", "content": line})
    try:
        for rnd in range(MAX_TOOL_ROUNDS + 1):
            reply = sess.chat(messages, tools=TOOLS, tool_choice="auto" if rnd < MAX_TOOL_ROUNDS else "none",
                              parallel_tool_calls=False, max_tokens=MAX_TOKENS, temperature=0.0, seed=1)
            content = reply.content or ""
            if not reply.tool_calls:
                print(f"ASSISTANT: {one_line(content)}")
                messages.append({"role": "assistant", "content": content})
                return True
            messages.append({"role": "assistant", "content": content, "tool_calls": reply.tool_calls})
            for call in reply.tool_calls:
                name, arguments = call["function"]["name"], call["function"]["arguments"]
                print(f"CALL {name} {one_line(arguments)}")
                result = dumps(fridge.run(name, json.loads(arguments)))
                print(f"RESULT {name} {result}")
                messages.append({"role": "tool", "content": result, "tool_call_id": call["id"], "name": name})
    except ember.Error as e:
        print(f"ERROR: {e}")
    del messages[start:]
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A kitchen assistant with tool calls; user lines on stdin.")
    ap.add_argument("model", nargs="?", help=f"the GGUF model (default {DEFAULT_MODEL})")
    ap.add_argument("--model", dest="model_opt", metavar="MODEL", help="the same, as an option")
    args = ap.parse_args(argv)
    path = args.model_opt or args.model or DEFAULT_MODEL

    sys.stdout.reconfigure(line_buffering=True)
    try:
        model = ember.Model(path)
        sess = model.session(n_ctx=N_CTX)
    except ember.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    fridge = Fridge()
    messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
    failed = False
    for raw in sys.stdin.buffer:
        if len(raw) > MAX_LINE - 1 or (len(raw) == MAX_LINE - 1 and not raw.endswith(b"\n")):
            print(f"ERROR: an input line is longer than {MAX_LINE - 2} bytes; it was skipped")
            failed = True
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            print(f"ERROR: an input line is not valid UTF-8 ({e.reason} at byte {e.start}); it was skipped")
            failed = True
            continue
        if not line:
            continue
        trim_history(messages)
        if not run_turn(sess, messages, line, fridge):
            failed = True
    print(f"STATE {dumps(fridge.state())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
