"""The Python API (ember.Model, Session, Generation): generation against the
C++ tool ember-run, streaming, stop strings, logits as a NumPy view, errors,
the GIL released during generation (two sessions on two threads), cancel."""
import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import BUILD, DEFAULT_MODELS, ROOT, model_path, run, tool

# The package of the build tree, or with EMBER_TEST_INSTALLED=1 the one `pip install .` put in this Python
PKG = BUILD / "python"
INSTALLED = os.environ.get("EMBER_TEST_INSTALLED") == "1"
if not INSTALLED:
    if not (PKG / "ember").exists():
        pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
    sys.path.insert(0, str(PKG))
import ember  # noqa: E402

PROMPT = "The capital of France is"
FAST = dict(n_ctx=256, n_threads=2)  # CI has two slow cores


@pytest.fixture(scope="module")
def path():
    return model_path(DEFAULT_MODELS[0])


@pytest.fixture(scope="module")
def model(path):
    return ember.Model(path)


@pytest.fixture
def session(model):
    return model.session(**FAST)


def ember_run(path, prompt, n, *flags):
    r = run([tool("ember-run"), "-m", path, "-p", prompt, "-n", str(n), "--temp", "0", "-c", "256", "-t", "2", *flags])
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def nl(text: str) -> str:
    """text as ember-run prints it: its output always ends with a newline."""
    return text if text.endswith("\n") else text + "\n"


# --- the model -----------------------------------------------------------------

def test_model_metadata_info_and_tokenizer(model, path):
    assert isinstance(model.metadata, dict) and model.metadata["llama.block_count"] == 30
    assert list(model.metadata) == list(ember.GGUFFile(path).metadata)
    info = model.info
    assert (info.arch, info.n_vocab, info.n_layer) == ("llama", 49152, 30) and model.n_vocab == 49152
    assert model.path == str(path)
    ids = model.tokenize(PROMPT)
    assert ids == [504, 3575, 282, 4649, 314] and all(isinstance(i, int) for i in ids)
    assert model.detokenize(ids) == PROMPT
    assert model.detokenize(np.array(ids, dtype=np.int64)) == PROMPT   # NumPy ids too
    # parse_special: "<|im_start|>" is token 1 only when asked for
    assert model.tokenize("<|im_start|>user", parse_special=True)[0] == 1
    assert 1 not in model.tokenize("<|im_start|>user")
    assert model.is_eog(2) and not model.is_eog(ids[0])  # <|im_end|>
    assert "ModelInfo(arch='llama'" in repr(info)


def test_apply_chat_template(model):
    text = model.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "SmolLM" in text  # SmolLM2's default system turn
    no_gen = model.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert not no_gen.endswith("assistant\n")


# --- generation ------------------------------------------------------------------

def test_greedy_generation_equals_ember_run(session, path):
    g = session.generate(PROMPT, max_tokens=16, temperature=0)
    text = "".join(g)
    assert nl(text) == ember_run(path, PROMPT, 16)
    assert "Paris" in text
    assert g.done and g.stop_reason == "max_tokens" and len(g.result.tokens) == 16
    assert g.result.text == text == g.text and g.result.n_prompt_tokens == 5


def test_token_prompt_and_continuation(session, model):
    a = "".join(session.generate(model.tokenize(PROMPT), max_tokens=8, temperature=0))
    session.reset()
    b = "".join(session.generate(PROMPT, max_tokens=8, temperature=0))
    assert a == b
    n = session.n_past
    assert n == 5 + 8 and session.tokens[:5] == model.tokenize(PROMPT)
    # the next call continues where the last one stopped
    more = "".join(session.generate("", max_tokens=4, temperature=0))
    session.reset()
    assert b + more == "".join(session.generate(PROMPT, max_tokens=12, temperature=0))


def test_sampling_is_seeded(session):
    kw = dict(max_tokens=12, temperature=1.0, seed=1234)
    a = "".join(session.generate("Once upon a time", **kw))
    session.reset()
    b = "".join(session.generate("Once upon a time", **kw))
    session.reset()
    c = "".join(session.generate("Once upon a time", **{**kw, "seed": 99}))
    assert a == b and a != c


def test_streaming_pieces_arrive_while_generating(session):
    g = session.generate("Once upon a time", max_tokens=48, temperature=0, ignore_eos=True)
    first = next(g)  # the first piece comes back before the rest is generated
    assert isinstance(first, str) and first
    assert not g.done and g.result is None and g.stop_reason is None
    times, pieces = [], [first]
    for p in g:
        times.append(time.perf_counter())
        pieces.append(p)
    assert len(pieces) > 10 and g.done
    assert "".join(pieces) == g.result.text
    gaps = np.diff(times)  # pieces came one token apart, not all at once at the end
    assert np.median(gaps) > 1e-4


def test_stop_strings(session, path):
    full = "".join(session.generate(PROMPT, max_tokens=16, temperature=0))
    assert "Paris." in full
    session.reset()
    g = session.generate(PROMPT, max_tokens=16, temperature=0, stop=["."])
    pieces = list(g)
    assert "".join(pieces) == " Paris" and g.stop_reason == "stop_string"
    assert nl("".join(pieces)) == ember_run(path, PROMPT, 16, "--stop", ".")
    session.reset()  # a single str, and a stop string spanning tokens
    assert "".join(session.generate(PROMPT, max_tokens=16, temperature=0, stop="aris.")) == " P"


def test_chat(model, session):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = session.chat(messages, max_tokens=24, temperature=0)
    assert isinstance(reply, str) and "Paris" in reply
    assert model.chat(messages, max_tokens=24, temperature=0, **FAST) == reply
    # the second turn reuses the cached first one and matches a fresh session
    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And of Italy?"}]
    g = session.chat(messages, stream=True, max_tokens=24, temperature=0)
    second = "".join(g)
    assert g.result.n_prompt_tokens < len(model.tokenize(model.apply_chat_template(messages), parse_special=True))
    fresh = model.session(**FAST).chat(messages, max_tokens=24, temperature=0)
    assert second == fresh and "Rome" in second


# --- logits ------------------------------------------------------------------------

def test_logits_are_a_view_that_agrees_with_the_cpp_side(model, session, path):
    assert session.logits is None  # nothing evaluated yet
    session.eval(model.tokenize(PROMPT))
    lg = session.logits
    assert lg.shape == (model.n_vocab,) and lg.dtype == np.float32
    assert lg.base is not None and not lg.flags.owndata and not lg.flags.writeable
    assert np.shares_memory(lg, session.logits)  # the same buffer every time: no copy
    first = model.detokenize([int(lg.argmax())])
    assert ember_run(path, PROMPT, 1).startswith(first) and first == " Paris"
    before = lg.copy()
    session.eval([int(lg.argmax())])  # overwritten in place by the next eval
    assert not np.array_equal(before, lg) and np.array_equal(lg, session.logits)
    # all_logits: a copy of every row, the last equal to the view
    session.reset()
    rows = session.eval(model.tokenize(PROMPT), all_logits=True)
    assert rows.shape == (5, model.n_vocab) and np.array_equal(rows[-1], session.logits)
    np.testing.assert_allclose(rows[-1], before, rtol=0, atol=1e-3)


def test_logits_keep_the_session_alive(model):
    s = model.session(**FAST)
    s.eval(model.tokenize("Hello"))
    view = s.logits
    expected = view.copy()
    del s
    gc.collect()
    assert np.array_equal(view, expected)  # the view's base holds the session


# --- errors ----------------------------------------------------------------------

def test_bad_paths(tmp_path):
    with pytest.raises(ember.NotFoundError, match="missing.gguf") as e:
        ember.Model(tmp_path / "missing.gguf")
    assert isinstance(e.value, ember.Error) and e.value.code == "not_found"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ember.InvalidFileError):
        ember.Model(str(bad))
    with pytest.raises(TypeError):
        ember.Model(42)


def test_error_classes():
    codes = {"InvalidArgumentError": "invalid_argument", "InvalidFileError": "invalid_file",
             "UnsupportedError": "unsupported", "NotFoundError": "not_found", "TypeMismatchError": "type_mismatch",
             "IoError": "io", "OutOfMemoryError": "out_of_memory", "BackendError": "backend",
             "InternalError": "internal", "CancelledError": "cancelled"}
    for name, code in codes.items():
        cls = getattr(ember, name)
        assert issubclass(cls, ember.Error) and cls.code == code and cls.__module__ == "ember" and cls.__doc__
    assert issubclass(ember.InvalidArgumentError, ValueError) and issubclass(ember.IoError, OSError)


def test_bad_arguments(model, session):
    with pytest.raises(ember.InvalidArgumentError, match="n_threads"):
        model.session(n_threads=-1)
    with pytest.raises(ember.InvalidArgumentError, match="n_ctx"):
        model.session(n_ctx=-5)
    with pytest.raises(ember.InvalidArgumentError, match="kv_type"):
        model.session(kv_type="q8")
    with pytest.raises(ember.InvalidArgumentError, match="precision is 'medium'"):
        model.session(precision="medium")
    with pytest.raises(ember.InvalidArgumentError, match="empty"):
        session.eval([])
    with pytest.raises(ember.InvalidArgumentError, match="outside the vocabulary"):
        session.eval([10**6])
    with pytest.raises(ember.InvalidArgumentError, match="does not fit"):
        session.eval(list(range(300)))
    # values are checked when generation starts (like any generator), types at the call
    with pytest.raises(ember.InvalidArgumentError, match="temperature"):
        next(session.generate("x", temperature=-1))
    with pytest.raises(ember.InvalidArgumentError, match="stop"):
        list(session.generate("x", stop=[""]))
    with pytest.raises(ember.InvalidArgumentError, match="does not fit"):
        list(session.generate("word " * 400))
    with pytest.raises(TypeError, match="temperature"):
        session.generate("x", temperature="hot")
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        session.generate("x", temprature=0)
    with pytest.raises(TypeError, match="prompt"):
        session.generate(3.5)
    with pytest.raises(TypeError):
        session.eval("not ids")
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        model.apply_chat_template(["hi"])
    with pytest.raises(TypeError, match="content"):
        session.chat([{"role": "user"}])
    with pytest.raises(ember.InvalidArgumentError):
        model.apply_chat_template([])
    with pytest.raises(ember.InvalidArgumentError, match="truncate"):
        session.truncate(10)
    # the session is still usable after all of that
    session.reset()
    assert "Paris" in "".join(session.generate(PROMPT, max_tokens=4, temperature=0))


# --- threads, early exit, cancel ---------------------------------------------------

def test_two_sessions_two_threads_and_the_gil_is_released(model, path):
    expected = ember_run(path, PROMPT, 32)
    n_threads_each = 1
    sessions = [model.session(n_ctx=256, n_threads=n_threads_each) for _ in range(2)]
    out, spans = [None, None], [None, None]
    ticks = []
    done = threading.Event()

    def worker(i):
        t0 = time.perf_counter()
        out[i] = "".join(sessions[i].generate(PROMPT, max_tokens=32, temperature=0))
        spans[i] = (t0, time.perf_counter())

    def ticker():  # pure Python: runs only when the generating threads let go of the GIL
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    tick = threading.Thread(target=ticker)
    tick.start()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    done.set()
    tick.join()
    assert [nl(o) for o in out] == [expected, expected]
    (a0, a1), (b0, b1) = spans
    assert max(a0, b0) < min(a1, b1)  # the two generations overlapped in time
    during = [t for t in ticks if max(a0, b0) <= t <= min(a1, b1)]
    assert len(during) >= 5, f"the Python thread ran {len(during)} times while both generated"


def test_eval_releases_the_gil(model):
    s = model.session(n_ctx=512, n_threads=1)
    ids = (model.tokenize("The quick brown fox jumps over the lazy dog. ") * 30)[:400]
    ticks = []
    t = threading.Thread(target=lambda: s.eval(ids))
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    assert len(ticks) >= 5


def test_abandoned_generation_stops_and_frees_the_session(model):
    s = model.session(**FAST)
    for _ in s.generate("Once upon a time", max_tokens=200, ignore_eos=True):
        break  # the Generation is dropped here: generation stops after that one piece
    n = s.n_past
    assert n <= 4 + 2
    time.sleep(0.05)
    assert s.n_past == n  # nothing runs in the background
    g = s.generate("Once upon a time", max_tokens=200, ignore_eos=True)
    next(g)
    del g
    gc.collect()
    # a Generation kept alive is closed by the next call on its session
    g = s.generate("x", max_tokens=200, ignore_eos=True)
    next(g)
    s.reset()
    assert list(g) == [] and g.stop_reason == "callback"
    with s.generate(PROMPT, max_tokens=50, temperature=0) as g:
        assert next(g)
    assert g.done
    # never iterated: never run
    s.reset()
    g = s.generate(PROMPT, max_tokens=5)
    g.close()
    assert s.n_past == 0 and list(g) == []


def test_cancel_from_another_thread(model):
    s = model.session(**FAST)
    g = s.generate("Once upon a time", max_tokens=-1, ignore_eos=True)
    pieces = []
    timer = threading.Timer(0.3, s.cancel)
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(ember.CancelledError) as cancelled:  # a cancellation is an error, with the reply so far
        for p in g:
            pieces.append(p)
    timer.join()
    assert g.stop_reason == "cancelled" and pieces
    assert cancelled.value.result.text == "".join(pieces)
    assert time.perf_counter() - t0 < 10
    assert s.n_past < 256
    # a consumer blocked in next() on another thread is released too
    s.reset()
    g = s.generate("Once upon a time", max_tokens=-1, ignore_eos=True)
    result = {}
    def consume():
        try:
            for p in g:
                result["text"] = result.get("text", "") + p
        except ember.CancelledError:
            result["cancelled"] = True

    th = threading.Thread(target=consume)
    th.start()
    time.sleep(0.3)
    s.cancel()
    th.join(timeout=10)
    assert not th.is_alive() and g.stop_reason == "cancelled" and result["text"] and result["cancelled"]
    # eval: CancelledError
    s.reset()
    ids = (model.tokenize("The quick brown fox jumps over the lazy dog. ") * 30)[:250]
    s2 = model.session(n_ctx=256, n_threads=1, n_batch=8)  # many batches: many chances to stop
    err = []

    def ev():
        try:
            s2.eval(ids)
        except ember.CancelledError as e:
            err.append(e)

    th = threading.Thread(target=ev)
    th.start()
    deadline = time.perf_counter() + 30
    while th.is_alive() and time.perf_counter() < deadline:  # a cancel() before eval() starts has no effect
        time.sleep(0.02)
        s2.cancel()
    th.join()
    assert err and s2.n_past < len(ids)
    # and the session works afterwards
    s2.reset()
    assert "Paris" in "".join(s2.generate(PROMPT, max_tokens=4, temperature=0))


# --- the package and the example ---------------------------------------------------

def test_package_files():
    pkg = os.path.dirname(ember.__file__)
    assert INSTALLED or os.path.samefile(pkg, PKG / "ember")
    for f in ("__init__.py", "_ember.pyi", "py.typed"):
        assert os.path.exists(os.path.join(pkg, f)), f
    for name in ember.__all__:  # docstrings on everything public
        obj = getattr(ember, name)
        assert obj.__doc__, name
        for attr, member in vars(obj).items() if isinstance(obj, type) else []:
            if not attr.startswith("_") and attr not in ("code", "result"):
                assert getattr(member, "__doc__", None), f"{name}.{attr}"


def test_chat_example(path):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(ember.__file__))}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "chat.py"), str(path),
                        "-c", "512", "-t", "2", "--temp", "0"],
                       input="What is the capital of France?\n/quit\n", capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and "context 512" in r.stderr


@pytest.mark.parametrize("name, arch", [("gemma3", "gemma3"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("phi3", "phi3")])
def test_model_info_names_the_architecture(name, arch):
    info = ember.Model(str(ROOT / "tests" / "data" / "arch" / f"{name}.gguf")).info
    assert info.arch == arch and f"ModelInfo(arch='{arch}'" in repr(info)


def test_gemma3_model_info():
    info = ember.Model(str(model_path(DEFAULT_MODELS[1]))).info
    assert (info.arch, info.n_layer, info.n_vocab) == ("gemma3", 18, 262144)


def test_precision(model, monkeypatch):
    """precision: 'exact' by default, 'fast' on request or through EMBER_PRECISION;
    both give the same greedy continuation of a short prompt on SmolLM2."""
    monkeypatch.delenv("EMBER_PRECISION", raising=False)
    assert model.session(n_ctx=64, n_threads=1).precision == "exact"
    fast = model.session(n_ctx=64, n_threads=1, precision="fast")
    assert fast.precision == "fast"
    monkeypatch.setenv("EMBER_PRECISION", "fast")
    assert model.session(n_ctx=64, n_threads=1).precision == "fast"
    assert model.session(n_ctx=64, n_threads=1, precision="exact").precision == "exact"  # the param wins
    monkeypatch.setenv("EMBER_PRECISION", "sloppy")
    with pytest.raises(ember.InvalidArgumentError, match="EMBER_PRECISION=sloppy"):
        model.session(n_ctx=64, n_threads=1)
    monkeypatch.delenv("EMBER_PRECISION")
    exact = model.session(n_ctx=64, n_threads=1)
    a = "".join(exact.generate("The capital of France is", max_tokens=6, temperature=0))
    b = "".join(fast.generate("The capital of France is", max_tokens=6, temperature=0))
    assert a == b and "Paris" in a, (a, b)


def test_use_mmap_false_reads_the_weights_and_gives_the_same_text(path, model):
    read = ember.Model(path, use_mmap=False)
    a = "".join(model.session(**FAST).generate(PROMPT, max_tokens=6, temperature=0))
    b = "".join(read.session(**FAST).generate(PROMPT, max_tokens=6, temperature=0))
    assert a == b and a
