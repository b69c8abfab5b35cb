// The GBNF grammar engine: the parser (every syntax element, errors with their
// line and column), the text-level checks, random strings, and the token-level
// matcher over small fake vocabularies (partial UTF-8 across tokens, token
// references, end of generation) and over SmolLM2's vocabulary (apply() masks
// exactly the tokens allows() refuses).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "ember/ember.hpp"
#include "runtime/grammar/engine.hpp"
#include "runtime/grammar/matcher.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

// The error a grammar gives, or "" when it parses.
std::string error_of(std::string_view gbnf, size_t* line = nullptr, size_t* col = nullptr) {
    try {
        (void)Grammar::parse(gbnf);
    } catch (const GrammarError& e) {
        if (line) *line = e.line();
        if (col) *col = e.column();
        CHECK(e.code() == ErrorCode::InvalidArgument);
        return e.what();
    }
    return "";
}

const char* kJson = R"(root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
)";

// A fake vocabulary: text tokens by their bytes, then the named control / EOG tokens.
struct FakeVocab {
    std::vector<grammar::VocabEntry> entries;
    TokenId add(std::string bytes) {
        entries.push_back({bytes, bytes, false, false});
        return static_cast<TokenId>(entries.size() - 1);
    }
    TokenId add_control(std::string text, bool eog) {
        entries.push_back({std::move(text), "", true, eog});
        return static_cast<TokenId>(entries.size() - 1);
    }
    std::shared_ptr<const grammar::TokenVocab> build() const { return grammar::build_token_vocab(entries); }
};

// The tokens apply() leaves finite.
std::vector<TokenId> unmasked(const grammar::Matcher& m, size_t n) {
    std::vector<float> logits(n, 0.0f);
    m.apply(logits);
    std::vector<TokenId> out;
    for (size_t i = 0; i < n; ++i) {
        if (std::isfinite(logits[i])) out.push_back(static_cast<TokenId>(i));
    }
    return out;
}

// apply() must agree with allows() on every token.
void check_apply_matches_allows(const grammar::Matcher& m, size_t n, const std::string& where) {
    std::vector<float> logits(n, 1.0f);
    m.apply(logits);
    size_t disagree = 0, allowed = 0;
    for (size_t i = 0; i < n; ++i) {
        const bool a = m.allows(static_cast<TokenId>(i));
        allowed += a;
        if (a != std::isfinite(logits[i])) {
            if (disagree++ < 5) MESSAGE(where << ": token " << i << " allows=" << a << " apply=" << logits[i]);
        }
    }
    INFO(where << ": " << allowed << " allowed");
    CHECK(disagree == 0);
}

}  // namespace

TEST_CASE("grammar: every syntax element parses and matches what it says") {
    struct Case {
        const char* gbnf;
        std::vector<std::string> yes, no;
    };
    const std::vector<Case> cases = {
        {R"(root ::= "yes" | "no")", {"yes", "no"}, {"", "ye", "yesno", "No"}},
        {"root ::= \"a\\n\\r\\t\\\\\\\"\\[\\]\\-\"", {"a\n\r\t\\\"[]-"}, {"a"}},
        {R"(root ::= "\x41\u00e9\U0001F600")", {"A\xC3\xA9\xF0\x9F\x98\x80"}, {"A"}},
        {"root ::= \"h\xC3\xA9llo \xE4\xB8\x96\"", {"h\xC3\xA9llo \xE4\xB8\x96"}, {"hello "}},
        {R"(root ::= [a-c] [x-z0-9_])", {"ax", "c_", "b5"}, {"dx", "a", "aA"}},
        {R"(root ::= [^a-c\n]+)", {"xyz", "\xC3\xA9"}, {"a", "x\n", ""}},
        {R"(root ::= [\]\-\\] [\x00-\x1F])", {"]\x01", "-\x1f", "\\\t"}, {"a\x01"}},
        {R"(root ::= [a-])", {"a", "-"}, {"b"}},
        {R"(root ::= . .)", {"ab", "\xE4\xB8\x96\xF0\x9F\x98\x80", "\n\t"}, {"a", "abc"}},
        {R"(root ::= "a"* "b")", {"b", "ab", "aaaab"}, {"", "a", "ba"}},
        {R"(root ::= "a"+ "b")", {"ab", "aaab"}, {"b"}},
        {R"(root ::= "ab"? "c")", {"c", "abc"}, {"ac", "abab c"}},
        {R"(root ::= "a"{3})", {"aaa"}, {"aa", "aaaa"}},
        {R"(root ::= "a"{2,})", {"aa", "aaaaaaa"}, {"a"}},
        {R"(root ::= "a"{1,3} "b"{0,1})", {"a", "aab", "aaa", "aaab"}, {"", "b", "aaaa", "abb"}},
        {R"(root ::= "ab"{ 2 , 3 })", {"abab", "ababab"}, {"ab", "abababab"}},
        {R"(root ::= "a"{0})", {""}, {"a"}},
        {R"(root ::= ("x" | "yz")* "!")", {"!", "xyzx!", "yzyz!"}, {"y!", "x"}},
        {"root ::= (\n  \"a\" # comment\n  | \"b\"\n)\n", {"a", "b"}, {"ab"}},
        {"# leading comment\n\nroot ::= item item\nitem ::=\n  \"i\"\n", {"ii"}, {"i"}},
        {"root ::= a |\n  b\na ::= \"A\"\nb ::= \"B\"\r\n", {"A", "B"}, {"AB"}},
        {R"(root ::= "" | "x")", {"", "x"}, {"xx"}},
        {R"(root ::= [])", {}, {"", "a"}},  // an empty class: only... nothing; see the empty-language test
        {R"(root ::= ("a" | "a")* "b")", {"b", "aaaaaaaaab"}, {"a"}},
        {R"(root ::= x-y_z
x-y_z ::= "ok")", {"ok"}, {"o"}},
    };
    for (const auto& c : cases) {
        const std::string gbnf = c.gbnf;
        CAPTURE(gbnf);
        if (c.yes.empty()) {
            CHECK(error_of(c.gbnf).find("empty") != std::string::npos);
            continue;
        }
        const Grammar g = Grammar::parse(c.gbnf);
        CHECK(g.source() == c.gbnf);
        CHECK(g.root() == "root");
        for (const auto& s : c.yes) {
            CAPTURE(s);
            CHECK(g.matches(s));
            for (size_t i = 0; i <= s.size(); ++i) CHECK(g.is_prefix(s.substr(0, i)));
        }
        for (const auto& s : c.no) {
            CAPTURE(s);
            CHECK_FALSE(g.matches(s));
        }
    }
}

TEST_CASE("grammar: is_prefix, partial characters and a custom root") {
    const Grammar g = Grammar::parse(R"(root ::= "ab" "c"* | "\u00e9t\u00e9")");
    CHECK(g.is_prefix(""));
    CHECK(g.is_prefix("a"));
    CHECK(g.is_prefix("abcc"));
    CHECK_FALSE(g.is_prefix("b"));
    CHECK_FALSE(g.is_prefix("abd"));
    CHECK(g.is_prefix("\xC3"));       // the first byte of é
    CHECK_FALSE(g.is_prefix("\xC4"));  // the first byte of a character that cannot come
    CHECK_FALSE(g.matches("\xC3"));
    CHECK_FALSE(g.is_prefix("\xFF"));  // never UTF-8
    const Grammar h = Grammar::parse("start ::= \"s\" other\nother ::= \"o\"", "start");
    CHECK(h.root() == "start");
    CHECK(h.matches("so"));
    CHECK(error_of("start ::= \"s\"").find("no rule 'root' (the start rule)") != std::string::npos);
}

TEST_CASE("grammar: the JSON grammar accepts JSON and refuses the rest") {
    const Grammar g = Grammar::parse(kJson);
    for (const char* s : {R"({})", R"({"a": 1})", R"({"a": [1, 2.5e3, "x\n\u00e9", true, null], "b": {}})",
                          "{\n  \"k\": -0.5}", R"({"\u1234": false} )"}) {
        CAPTURE(s);
        CHECK(g.matches(s));
    }
    for (const char* s : {R"([])", R"({"a" 1})", R"({"a": 01})", R"({"a": tru})", "{\"a\": \"\x01\"}",
                          R"({"a": "\q"})", R"({,})"}) {
        CAPTURE(s);
        CHECK_FALSE(g.matches(s));
    }
    CHECK(g.is_prefix(R"({"a": [1, {"b": "x)"));
    CHECK_FALSE(g.is_prefix(R"({"a": ])"));
}

TEST_CASE("grammar: syntax errors say where (line, byte column) and what was expected") {
    struct Case {
        const char* gbnf;
        size_t line, col;
        const char* text;
    };
    const std::vector<Case> cases = {
        {"root ::= \"abc", 1, 14, "unterminated string literal, expected '\"'"},
        {"root ::= \"a\"\nx ::= \"b\"\ny ::= \"c\" \"d", 3, 13, "unterminated string literal, expected '\"'"},
        {"root ::= [abc", 1, 10, "unterminated character class, expected ']'"},
        {"root = \"a\"", 1, 6, "expected '::='"},
        {"root ::= (\"a\" | \"b\"", 1, 20, "expected ')'"},
        {"root ::= \"a\" )", 1, 14, "expected an element"},
        {"root ::= * \"a\"", 1, 10, "'*' has nothing to repeat"},
        {"root ::= \"\\q\"", 1, 11, "unknown escape '\\q'"},
        {"root ::= \"\\x4\"", 1, 14, "expected 2 hex digits"},
        {"root ::= \"a\"{3,1}", 1, 13, "max below min"},
        {"root ::= \"a\"{,3}", 1, 14, "expected a number"},
        {"root ::= \"a\"{2", 1, 15, "expected '}'"},
        {"root ::= [z-a]", 1, 11, "reversed"},
        {"root ::= <[12>", 1, 14, "expected ']'"},
        {"root ::= <abc", 1, 10, "unterminated token reference"},
        {"root ::= \"a\"\n::= \"b\"", 2, 1, "expected a rule name"},
        {"root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice (first at 1:1)"},
        {"root ::= \"\xFF\"", 1, 11, "invalid UTF-8"},
    };
    for (const auto& c : cases) {
        const std::string gbnf = c.gbnf;
        CAPTURE(gbnf);
        size_t line = 0, col = 0;
        const std::string e = error_of(c.gbnf, &line, &col);
        CHECK(e.find(c.text) != std::string::npos);
        CHECK(line == c.line);
        CHECK(col == c.col);
        CHECK(e.rfind("grammar:" + std::to_string(c.line) + ":" + std::to_string(c.col) + ": ", 0) == 0);
    }
}

TEST_CASE("grammar: undefined rules, left recursion, empty languages, deep nesting and huge repetitions") {
    size_t line = 0, col = 0;
    std::string e = error_of("root ::= \"[\" items \"]\"\nitems ::= value (\",\" value)*", &line, &col);
    CHECK(e.rfind("grammar:2:1: undefined rule 'value' (used at 2:11)", 0) == 0);
    CHECK(line == 2);

    e = error_of("expr ::= term \"+\" term\nterm ::= expr | \"x\"\nroot ::= expr");
    CHECK(e.rfind("grammar:1:1: rule 'expr' is left-recursive: expr -> term -> expr", 0) == 0);
    e = error_of("root ::= \"x\"\na ::= b? a \"x\"\nb ::= \"y\"");  // through a nullable prefix, unreachable too
    CHECK(e.rfind("grammar:2:1: rule 'a' is left-recursive: a -> a", 0) == 0);
    e = error_of("root ::= e? root \"x\"\ne ::= \"\"");
    CHECK(e.find("left-recursive") != std::string::npos);
    CHECK(error_of("root ::= \"(\" root \")\" | \"x\"").empty());  // recursion after text is fine

    e = error_of("root ::= \"a\" root");
    CHECK(e.rfind("grammar:1:1: the grammar's language is empty: 'root' derives no finite string", 0) == 0);
    e = error_of("x ::= \"a\"\nroot ::= x loop\nloop ::= \"b\" loop");
    CHECK(e.rfind("grammar:2:1: the grammar's language is empty", 0) == 0);

    std::string deep = "root ::= ";
    deep.append(10000, '(').append("\"a\"").append(10000, ')');
    e = error_of(deep, &line, &col);
    CHECK(e.find("nested too deep") != std::string::npos);
    std::string shallow = "root ::= ";
    shallow.append(100, '(').append("\"a\"").append(100, ')');
    CHECK(error_of(shallow).empty());

    e = error_of("root ::= \"a\"{10001}");
    CHECK(e.find("repetition count too large") != std::string::npos);
    e = error_of("root ::= \"a\"{1,99999999999999999999999}");
    CHECK(e.find("repetition count too large") != std::string::npos);
    // allowed bounds, but the expansion would be enormous
    std::string big = "root ::=";
    for (int i = 0; i < 500; ++i) big += " \"abc\"{10000}";
    e = error_of(big);
    CHECK(e.find("too large") != std::string::npos);
    CHECK(Grammar::parse("root ::= \"a\"{0,10000}").matches(std::string(10000, 'a')));
}

TEST_CASE("grammar: ambiguous grammars stay bounded") {
    const Grammar g = Grammar::parse(R"(root ::= ("a" | "a" | "a")* ("b" | "b")?)");
    CHECK(g.matches(std::string(2000, 'a') + "b"));
    // an exponential number of ways to derive nothing, refused with an error instead of a hang
    std::ostringstream gb;
    gb << "root ::= r30 \"x\"\nr0 ::= \"\" | \"\"\n";
    for (int i = 1; i <= 30; ++i) gb << 'r' << i << " ::= r" << i - 1 << " r" << i - 1 << '\n';
    const std::string e = error_of(gb.str());
    CHECK(e.find("ambiguous") != std::string::npos);
}

TEST_CASE("grammar: random strings are members, reproducible and bounded") {
    const Grammar g = Grammar::parse(kJson);
    for (uint64_t seed = 0; seed < 40; ++seed) {
        const std::string s = g.random_string(seed, 300);
        CAPTURE(s);
        CHECK(s.size() <= 300);
        CHECK(g.matches(s));
        CHECK(s == g.random_string(seed, 300));
    }
    const Grammar any = Grammar::parse("root ::= .{1,50}");
    bool multibyte = false;
    for (uint64_t seed = 0; seed < 20; ++seed) {
        const std::string s = any.random_string(seed, 64);
        CHECK(any.matches(s));
        for (unsigned char c : s) multibyte |= c >= 0x80;
    }
    CHECK(multibyte);
    CHECK_THROWS_AS((void)Grammar::parse("root ::= \"abcdef\"").random_string(1, 3), Error);
    CHECK_THROWS_AS((void)Grammar::parse("root ::= <[5]>").random_string(1), Error);
    // a range across the surrogates never yields one
    const Grammar sur = Grammar::parse(R"(root ::= [\uD000-\uE0FF]{20})");
    for (uint64_t seed = 0; seed < 20; ++seed) CHECK(sur.matches(sur.random_string(seed, 100)));
}

TEST_CASE("grammar: matcher over a fake vocabulary: tokens across elements and split characters") {
    FakeVocab v;
    const TokenId t_hello = v.add("hello");
    const TokenId t_hel = v.add("hel");
    const TokenId t_lo = v.add("lo");
    const TokenId t_lo_sp = v.add("lo w");
    const TokenId t_world = v.add("world");
    const TokenId t_sp = v.add(" ");
    const TokenId t_e1 = v.add("\xC3");          // the first byte of é
    const TokenId t_e2 = v.add("\xA9t\xC3\xA9");  // the rest of é, "t", é
    const TokenId t_bad = v.add("\xA9");         // a lone continuation byte
    const TokenId t_x = v.add("x");
    const TokenId eos = v.add_control("</s>", true);
    const TokenId ctl = v.add_control("<|tool|>", false);
    const auto vocab = v.build();
    const size_t n = v.entries.size();

    const Grammar g = Grammar::parse(R"(root ::= "hello" (" world")? | "\u00e9t\u00e9")");
    grammar::Matcher m(g, vocab);
    CHECK_FALSE(m.can_end());
    CHECK(m.allows(t_hello));
    CHECK(m.allows(t_hel));
    CHECK(m.allows(t_e1));
    CHECK_FALSE(m.allows(t_lo));
    CHECK_FALSE(m.allows(t_bad));
    CHECK_FALSE(m.allows(eos));
    CHECK_FALSE(m.allows(ctl));
    CHECK(unmasked(m, n) == std::vector<TokenId>{t_hello, t_hel, t_e1});
    check_apply_matches_allows(m, n, "start");

    grammar::Matcher m2 = m;  // copies are independent
    m.accept(t_hel);
    CHECK(m.allows(t_lo));
    CHECK(m.allows(t_lo_sp));  // spans "hello" and the group
    CHECK_FALSE(m.allows(t_hello));
    m.accept(t_lo_sp);
    CHECK_FALSE(m.can_end());
    CHECK_THROWS_AS(m.accept(t_x), Error);
    CHECK(m.accept_text("orld"));
    CHECK(m.can_end());
    CHECK(m.must_end());
    CHECK(unmasked(m, n) == std::vector<TokenId>{eos});
    check_apply_matches_allows(m, n, "end");

    // the copy is still at the start; a character split across tokens
    CHECK(m2.allows(t_hello));
    m2.accept(t_e1);
    CHECK_FALSE(m2.can_end());
    CHECK(m2.allows(t_e2));
    CHECK(m2.allows(t_bad));  // completes é
    CHECK_FALSE(m2.allows(t_x));
    CHECK_FALSE(m2.allows(t_e1));
    check_apply_matches_allows(m2, n, "inside a character");
    m2.accept(t_e2);
    CHECK(m2.can_end());
    CHECK(m2.must_end());
    CHECK_FALSE(m2.accept_text("x"));
    CHECK(m2.can_end());  // unchanged

    // "hello" then end or continue
    grammar::Matcher m3(g, vocab);
    m3.accept(t_hello);
    CHECK(m3.can_end());
    CHECK_FALSE(m3.must_end());
    CHECK(m3.allows(eos));
    CHECK(m3.allows(t_sp));
    CHECK_FALSE(m3.allows(t_world));
    check_apply_matches_allows(m3, n, "after hello");
    // logits beyond the vocabulary are masked
    std::vector<float> logits(n + 3, 0.0f);
    m3.apply(logits);
    CHECK(std::isinf(logits[n + 2]));
}

TEST_CASE("grammar: token references, negation and end of generation") {
    FakeVocab v;
    const TokenId t_a = v.add("a");
    const TokenId t_think = v.add_control("<think>", false);
    const TokenId t_end_think = v.add_control("</think>", false);
    const TokenId t_b = v.add("b");
    const TokenId eot = v.add_control("<|im_end|>", true);
    const auto vocab = v.build();
    const size_t n = v.entries.size();

    const Grammar g = Grammar::parse(R"(root ::= <think> (!<[2]>)* <[2]> "b")");
    CHECK_FALSE(g.matches("b"));
    grammar::Matcher m(g, vocab);
    CHECK(unmasked(m, n) == std::vector<TokenId>{t_think});
    m.accept(t_think);
    // inside: anything but </think> (EOG never), or </think>
    CHECK(m.allows(t_a));
    CHECK(m.allows(t_b));
    CHECK(m.allows(t_think));
    CHECK(m.allows(t_end_think));
    CHECK_FALSE(m.allows(eot));
    check_apply_matches_allows(m, n, "inside think");
    m.accept(t_a);
    m.accept(t_end_think);
    CHECK(unmasked(m, n) == std::vector<TokenId>{t_b});
    m.accept(t_b);
    CHECK(m.must_end());
    CHECK(unmasked(m, n) == std::vector<TokenId>{eot});

    // an EOG token named by a reference is accepted there, even where the grammar cannot end
    grammar::Matcher e(Grammar::parse(R"(root ::= "a" <|im_end|> "b")"), vocab);
    e.accept(t_a);
    CHECK(e.allows(eot));
    CHECK_FALSE(e.can_end());
    e.accept(eot);
    CHECK(e.allows(t_b));

    // a reference that is not a token of the vocabulary, or an id out of range: where it was written
    try {
        grammar::Matcher bad(Grammar::parse("root ::= (\"a\"\n  <nope>)"), vocab);
        FAIL("expected an error");
    } catch (const GrammarError& err) {
        CHECK(err.line() == 2);
        CHECK(err.column() == 3);
        CHECK(std::string(err.what()).find("not a single token") != std::string::npos);
    }
    CHECK_THROWS_AS(grammar::Matcher(Grammar::parse("root ::= <[99]>"), vocab), GrammarError);
    CHECK_THROWS_AS(grammar::Matcher(Grammar{}, vocab), Error);
}

TEST_CASE("grammar: SmolLM2's vocabulary: apply() masks exactly what allows() refuses") {
    const fs::path model = ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
    EMBER_REQUIRE_RESOURCE(model, ember_test::kFetchModels);
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(model.string()));
    const auto vocab = grammar::build_token_vocab(tok);
    const size_t n = tok.size();
    const Grammar g = Grammar::parse(kJson);
    grammar::Matcher m(g, vocab);
    check_apply_matches_allows(m, n, "start");
    CHECK_FALSE(m.allows(tok.eos()));
    // walk through a document token by token, checking at several states
    const std::string doc = "{\"name\": \"caf\xC3\xA9 \xF0\x9F\x98\x80\", \"n\": [1, -2.5e3, true]}";
    const auto ids = tok.tokenize(doc, {.add_special = false});
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
        REQUIRE(m.allows(ids[i]));
        m.accept(ids[i]);
        text += tok.token_to_piece(ids[i]);
        if (i % 3 == 0) check_apply_matches_allows(m, n, "after '" + text + "'");
    }
    CHECK(text == doc);
    CHECK(m.can_end());
    CHECK(m.allows(tok.eos()));
    check_apply_matches_allows(m, n, "end");
    // the allowed tokens are exactly the ones whose text continues the document
    grammar::Matcher k(g, vocab);
    REQUIRE(k.accept_text("{\"ke"));
    std::vector<float> logits(n, 0.0f);
    k.apply(logits);
    for (size_t t = 0; t < n; t += 7) {
        const std::string piece = tok.token_to_piece(static_cast<TokenId>(t));
        if (piece.empty() || tok.is_eog(static_cast<TokenId>(t))) continue;
        CAPTURE(piece);
        CHECK(std::isfinite(logits[t]) == g.is_prefix("{\"ke" + piece));
    }
}

// A benchmark, not a test: ember_tests -tc='grammar benchmark*' --no-skip
TEST_CASE("grammar benchmark: apply() on the JSON grammar" * doctest::skip()) {
    for (const char* name : {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"}) {
        const fs::path model = ember_test::models_dir() / name;
        if (!fs::exists(model)) continue;
        const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(model.string()));
        auto t0 = std::chrono::steady_clock::now();
        const auto vocab = grammar::build_token_vocab(tok);
        auto t1 = std::chrono::steady_clock::now();
        std::cout << name << ": vocab " << tok.size() << ", build_token_vocab "
                  << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms\n";
        const Grammar g = Grammar::parse(kJson);
        std::vector<float> logits(tok.size(), 0.0f);
        for (const char* state : {"", "{\"", "{\"name\": \"some text ", "{\"name\":", "{\"a\": [1, 2.5"}) {
            grammar::Matcher m(g, vocab);
            REQUIRE(m.accept_text(state));
            std::fill(logits.begin(), logits.end(), 0.0f);
            auto a = std::chrono::steady_clock::now();
            m.apply(logits);
            auto b = std::chrono::steady_clock::now();
            const int reps = 50;
            for (int r = 0; r < reps; ++r) m.apply(logits);
            auto c = std::chrono::steady_clock::now();
            size_t allowed = 0;
            for (float x : logits) allowed += std::isfinite(x);
            // allows() on one token
            const TokenId probe = tok.tokenize("hello", {.add_special = false}).front();
            const int preps = 100000;
            size_t yes = 0;
            auto d = std::chrono::steady_clock::now();
            for (int r = 0; r < preps; ++r) yes += m.allows(probe);
            auto e = std::chrono::steady_clock::now();
            std::cout << "  state '" << state << "': first apply "
                      << std::chrono::duration<double, std::micro>(b - a).count() << " us, warm apply "
                      << std::chrono::duration<double, std::micro>(c - b).count() / reps << " us, allowed "
                      << allowed << ", allows() " << std::chrono::duration<double, std::nano>(e - d).count() / preps
                      << " ns (" << yes << ")\n";
        }
    }
}
